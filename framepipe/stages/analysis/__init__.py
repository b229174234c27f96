"""Face analysis: dlib descriptors on full-resolution crops, per-GOP tracklets, the gallery watch."""
