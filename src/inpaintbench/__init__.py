"""inpaintbench: reproducible inpainting benchmark."""
__version__ = "0.1.0"
