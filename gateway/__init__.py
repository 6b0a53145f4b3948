"""terminus: a terminating-gateway control service with Consul-compatible intentions."""

__version__ = "0.1.0"
