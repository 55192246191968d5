"""interop: other people's weights as jepa_lite networks. Meta's released I-JEPA encoders (meta) and
their predictors (meta_predictor), and the same encoders from Hugging Face transformers
(huggingface). Imports: errors, core, data, engine and evaluation, besides its own modules.
"""
