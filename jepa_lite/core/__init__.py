"""core: what the notebooks build. The multi-block masks (masks, mask_coverage), the encoders and
the predictor (models, model_sizes, cnn), the JEPA objective with its EMA target and collapse
monitors (objective) and SIGReg (sigreg): plain PyTorch modules and functions that know nothing of
data sets, training runs or files. Imports: torch and jepa_lite.errors only, besides its own modules.
"""
