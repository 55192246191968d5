"""jepa_lite: the pieces of I-JEPA that the course builds, finished and tested.

    masks      block samplers -> index tensors          (notebook 01)
    models     patch embedding, sin-cos, ViT, predictor  (notebooks 02, 03)
    model_sizes  the named sizes (MODEL_SIZES, IJEPA_SIZES) -> configs
    objective  EMA target, loss, collapse monitors       (notebook 04)
    config     TrainConfig and the named recipes (fast, paper)
    build      a run's networks from its config
    schedules  learning rate and weight decay per step   (notebook 05)
    train      the training loop: budget, metrics, resume, signals (notebook 05)
    train_data a run's images and each step's batch (crops, colour views, masks)
    checkpoint atomic writes, safe reads, a JEPA back from a file
    distributed  DistributedDataParallel: torchrun, or CPU workers from a notebook
    evaluate   features, probes, kNN, UMAP               (notebook 06)
    dense      patch features, segmentation / box probes, PCA pictures (notebook 07)
    cnn        a convolutional encoder with the encoder contract (notebook 08)
    data       procedural shapes, CIFAR-10/STL-10, image folders
    shapes     the procedural shapes renderer
    augment    batched crops and flips, recoloured views
    course     the notebooks' profile switch (test / cpu / gpu), `jepa-lite course`
    convert    released I-JEPA checkpoints -> VisionTransformer
    convert_predictor  their predictors -> Predictor, and a checkpoint's three networks
    convert_hf  the released encoders from Hugging Face transformers -> VisionTransformer
"""
__version__ = "0.1.0"
