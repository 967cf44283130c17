"""fedmtl_hpc: federated and distributed multi-task learning as an HPC batch job."""

__version__ = "0.1.0"
__all__ = ["__version__"]
