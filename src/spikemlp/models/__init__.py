"""Model families, one file each; importing this module registers every variant with timm."""
