"""terminus's native data plane (the "gateway"): mTLS in, intentions, Lambda/HTTP out."""

from gateway.dataplane.lambda_client import (
    Boto3CredentialProvider,
    HTTPUpstream,
    LambdaClient,
    LambdaTarget,
    StaticCredentialProvider,
)
from gateway.dataplane.routes import Route, Routes, lambda_target_from_meta, routes_from_control_plane
from gateway.dataplane.server import GatewayServer, run_gateway, serve_gateway

__all__ = [
    "Boto3CredentialProvider",
    "GatewayServer",
    "HTTPUpstream",
    "LambdaClient",
    "LambdaTarget",
    "Route",
    "Routes",
    "StaticCredentialProvider",
    "lambda_target_from_meta",
    "routes_from_control_plane",
    "run_gateway",
    "serve_gateway",
]
