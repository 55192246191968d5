"""jepa_lite: the pieces of I-JEPA that the course builds, finished and tested.

Laid out by layer, lowest first; a module imports only from its own folder or a lower layer
(tests/test_architecture.py checks it; docs/architecture.md draws it):

    errors       the errors the package expects (imports nothing of jepa_lite)
    core/        what the notebooks build: masks, ViT and predictor, the JEPA objective, SIGReg, a CNN
    data/        data sets as uint8 tensors, the procedural shapes, image folders, streaming, augmentation
    engine/      training: config and recipes, the loop, checkpoints, metrics, data parallelism, devices
    evaluation/  frozen-feature probes (linear, kNN), dense probes (segmentation, boxes)
    interop/     Meta's released I-JEPA checkpoints and the Hugging Face weights -> jepa_lite networks
    course/      the notebooks' profiles, running the whole course, the student notebooks
    cli          the `jepa-lite` command (python -m jepa_lite)

The folders re-export nothing: import from the module, e.g. `from jepa_lite.core.masks import MaskSampler`.
"""
__version__ = "0.1.0"
