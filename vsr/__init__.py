"""vsr: video and image super-resolution with SRCNN (Dong et al., TPAMI 2016)."""

__version__ = "0.1.0"
