"""Deployment: a trained MLP-SPE as one fast, exact inference module (``spikemlp.deploy``)."""

from .deploy import Agreement, DeployedModel, compare, deploy, deploy_for_command, measure

__all__ = ["Agreement", "DeployedModel", "compare", "deploy", "deploy_for_command", "measure"]
