"""flocker-pulumi: Flocker's applications and movable volumes as Pulumi resources."""

from .cluster import FlockerCluster
from .component import FilesError, FlockerDeployment
from .resources import FlockerApplication, FlockerVolume

__all__ = ["FilesError", "FlockerApplication", "FlockerCluster", "FlockerDeployment", "FlockerVolume"]
