"""Preprocessing jobs: Apache Beam pipelines run by the server (DirectRunner or Beam's
DaskRunner), and the transform they analyse recorded with their output."""
