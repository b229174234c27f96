"""HLS server and web console reading annotated segments straight from the OUTPUT stream."""
