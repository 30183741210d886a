"""The stage layer: the ONLY code that sees the whole config (:class:`medsec.config.
MedSecConfig`). Each module turns one config section into calls of the capability packages,
which take their own small settings and never import this layer or the top-level config."""
