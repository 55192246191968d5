"""jepa_lite: the pieces of I-JEPA that the course builds, finished and tested.

    masks      block samplers -> index tensors          (notebook 01)
    models     patch embedding, sin-cos, ViT, predictor  (notebooks 02, 03)
    objective  EMA target, loss, collapse monitors       (notebook 04)
    train      engine: schedules, budget, checkpoints    (notebook 05)
    evaluate   features, probes, kNN, UMAP               (notebook 06)
    dense      patch features, segmentation / box probes, PCA pictures (notebook 07)
    cnn        a convolutional encoder with the encoder contract (notebook 08)
    data       procedural shapes, CIFAR-10/STL-10, image folders
    course     the notebooks' profile switch (test / cpu / gpu), `jepa-lite course`
    convert    released I-JEPA weights (reference checkpoints, Hugging Face) -> VisionTransformer
"""
__version__ = "0.1.0"
