"""Commands for people, not stages of ``dvc.yaml``: ``python -m pipeline.tools.<tool>``.

:mod:`~pipeline.tools.predict` classifies images with the trained model,
:mod:`~pipeline.tools.report` writes the review report of a change, :mod:`~pipeline.tools.bench`
measures speed and quality (:mod:`~pipeline.tools.reference` is its plain Keras recipe), and
:mod:`~pipeline.tools.experiment` runs the pipeline as a DVC experiment with a profile. Tools
import the library (and each other), never a stage.
"""
