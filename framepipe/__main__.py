from framepipe.pipeline.cli import entrypoint

entrypoint()
