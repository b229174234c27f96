"""framepipe: camera streams → detections and annotated video over NATS JetStream."""

__version__ = "0.1.0"
