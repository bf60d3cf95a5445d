"""mlengine inside a notebook: the IPython extension (``%load_ext mlengine``, :mod:`.magics`)."""
