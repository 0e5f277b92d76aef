"""The backend link's TLS: the parameters aiomqtt is given, and the warning for an unverified broker.

What it is for: `[mqtt.tls]` (firmware.config.TlsSettings) becomes aiomqtt's `TLSParameters`. The
broker's certificate and host name are verified unless the config says `insecure = true`; then
`warn_if_insecure` logs one WARNING at every start, saying what is lost and how to fix it.

What it must never do: turn verification off on its own (no fallback to an unverified connection when
verification fails), read the key or certificate files itself (the ssl module does, at connect), or
log a password.

Standard: RFC 8446 / RFC 5280 (TLS, certificate path validation as Python's ssl module does it),
RFC 6125 (host name check), MQTT over TLS on port 8883 (MQTT 5.0 §4.8 / IANA).
"""

from __future__ import annotations

import logging
import ssl

import aiomqtt

from firmware.config import MqttSettings, TlsSettings

__all__ = ["INSECURE_WARNING", "tls_insecure", "tls_parameters", "warn_if_insecure"]

log = logging.getLogger(__name__)

INSECURE_WARNING = ("[mqtt.tls] insecure = true: the broker %s:%d is NOT verified (neither its certificate "
                    "nor its host name), so anyone on the network path can pose as the backend, read every "
                    "message and send commands; set ca_file to the broker's CA and remove insecure")


def tls_parameters(tls: TlsSettings | None) -> aiomqtt.TLSParameters | None:
    """aiomqtt's TLS parameters for `[mqtt.tls]`; None (plain TCP) without the table."""
    if tls is None:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=_path(tls.ca_file), certfile=_path(tls.cert_file), keyfile=_path(tls.key_file),
        cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED,
    )


def tls_insecure(tls: TlsSettings | None) -> bool | None:
    """aiomqtt's `tls_insecure` (skip the host name check): only with `insecure = true`."""
    return None if tls is None else tls.insecure


def warn_if_insecure(settings: MqttSettings) -> bool:
    """Log the one-line WARNING when the broker is not verified; True if it was logged."""
    if settings.tls is None or not settings.tls.insecure:
        return False
    log.warning(INSECURE_WARNING, settings.host, settings.port)
    return True


def _path(value: object) -> str | None:
    return None if value is None else str(value)
