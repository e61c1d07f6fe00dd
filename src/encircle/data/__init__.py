"""Data layer: sources, registry, downloads, transforms and splits."""
