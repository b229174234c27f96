"""KEDA and HPA scaling rules, the load-curve simulator and the tuner."""
