"""PyAV helpers: GOP cutting, decode/encode, letterbox, annotation, sample clips."""
