"""sagips's Hydra launchers (``conf/hydra/launcher/sagips_*.yaml``), found by Hydra's plugin scan."""
