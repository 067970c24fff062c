"""The pipeline's stages, one module per ``dvc.yaml`` stage: ``python -m pipeline.stages.<stage>``.

Each parses its arguments (defaults from :mod:`pipeline.paths`), validates the params, calls the
library modules of :mod:`pipeline` and writes its outputs. Stages import the library, never
another stage or a tool (``tests/test_code_shape.py``).
"""
