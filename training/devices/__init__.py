"""Device modelling: I–V files, the published devices, usability, device models, plots."""
