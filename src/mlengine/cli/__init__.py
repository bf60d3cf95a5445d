"""The ``mle`` command line, shaped like ``gcloud ai-platform``.

One module per command group (:mod:`.server`, :mod:`.auth`, :mod:`.jobs`, :mod:`.submit`,
:mod:`.local`); :mod:`.core` holds what they share (error reporting, ``--project``, the client
factory), :mod:`.output` the formatting, :mod:`.streaming` log following and
:mod:`.local_runner` the processes of ``mle local train``. Modules import only click and mlengine's light
modules at import time; httpx, rich and yaml are imported inside commands so ``mle --help``
stays fast.
"""
