"""cifarbench: CNN vs Vision Transformer on small images, as a reproducible DVC pipeline."""
