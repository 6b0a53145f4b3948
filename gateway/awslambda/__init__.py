"""AWS Lambda support: SigV4 signing/verification and a local Lambda for development and tests.

Terminus forwards requests to Lambda Invoke itself (like Envoy's aws_lambda filter), so it needs
an exact SigV4 signer; the local Lambda lets that path run end to end without AWS.
"""

from __future__ import annotations

from gateway.awslambda.sigv4 import Credentials, Signer, SignedRequest, VerifyError, verify

__all__ = ["Credentials", "SignedRequest", "Signer", "VerifyError", "verify"]
