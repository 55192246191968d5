"""evaluation: what a trained encoder is worth, on frozen features. Feature extraction, linear probe,
kNN, raw-pixel baseline, UMAP, variance shares (probes); per-patch features, segmentation probe and
PCA pictures (dense); box IoU, average precision and a box probe (boxes). Imports: errors, core,
data and engine (the device, the progress line), besides its own modules.
"""
