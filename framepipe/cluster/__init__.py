"""Kubernetes: the rendered kustomize tree (workloads, NATS, KEDA) and camera Deployments."""
