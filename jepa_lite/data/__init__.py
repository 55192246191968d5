"""data: the images a run sees. Data sets held in memory as uint8 tensors (images: the container;
datasets: load_dataset, the procedural shapes, CIFAR-10 / STL-10, normalisation and each step's
batch indices), the shapes renderer (shapes), image folders (imagefolder), folders too large for
memory streamed by DataLoader workers (stream), batched crops, flips and recoloured views (augment).
Imports: jepa_lite.errors and core (the streaming path samples masks in its workers), besides its own modules.
"""
