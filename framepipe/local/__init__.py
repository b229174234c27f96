"""One machine: the embedded nats-server, the supervisor of stage processes, the runtime file."""
