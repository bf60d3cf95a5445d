"""The platform core: job kinds, the job lifecycle, the scheduler, executors, operations."""
