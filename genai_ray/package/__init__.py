"""The model package: its format and loading (``format.py``), export from a training checkpoint
(``export.py``) and sampling to files or datasets (``generate.py``)."""
