"""The backend link's TLS: the SSL context aiomqtt is given, and the warning for an unverified broker.

What it is for: `[mqtt.tls]` (firmware.config.TlsSettings) becomes the `ssl.SSLContext` that aiomqtt
(paho) connects with. The broker's certificate and host name are verified unless the config says
`insecure = true`; then `warn_if_insecure` logs one WARNING at every start, saying what is lost and
how to fix it.

What it must never do: turn verification off on its own (no fallback to an unverified connection when
verification fails), parse the key or certificate files itself (the ssl module loads them), or log a
password.

Standard: RFC 8446 / RFC 5280 (TLS, certificate path validation as Python's ssl module does it),
RFC 6125 (host name check), MQTT over TLS on port 8883 (MQTT 5.0 §4.8 / IANA).
"""

from __future__ import annotations

import logging
import ssl
from typing import Final

from firmware.config import MqttSettings, TlsSettings

__all__ = ["INSECURE_WARNING", "tls_context", "tls_insecure", "warn_if_insecure"]

log = logging.getLogger(__name__)

INSECURE_WARNING: Final = ("[mqtt.tls] insecure = true: the broker %s:%d is NOT verified (neither its certificate "
                    "nor its host name), so anyone on the network path can pose as the backend, read every "
                    "message and send commands; set ca_file to the broker's CA and remove insecure")


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSLSocket that closes itself when its handshake fails. paho-mqtt (2.2) leaves the socket of a
    failed handshake (a broker the CA did not sign) open until the garbage collector finds it: one file
    descriptor per reconnect attempt, and a ResourceWarning."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(tls: TlsSettings | None) -> ssl.SSLContext | None:
    """The SSL context for `[mqtt.tls]`; None (plain TCP) without the table.

    Verifying (the default): the broker's chain must lead to `ca_file` (or a system CA without it) and
    its certificate must name the host (`check_hostname`). Reads the CA, certificate and key files, so
    an OSError or ssl.SSLError when they became unreadable since the config was loaded."""
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=_path(tls.ca_file))
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), _path(tls.key_file))
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = _ClosingSSLSocket
    return context


def tls_insecure(tls: TlsSettings | None) -> bool | None:
    """aiomqtt's `tls_insecure` (paho: skip the host name check): True only with `insecure = true`. It
    must be given with a context of our own, or paho checks the host name itself (`ssl.match_hostname`)."""
    return None if tls is None else tls.insecure


def warn_if_insecure(settings: MqttSettings) -> bool:
    """Log the one-line WARNING when the broker is not verified; True if it was logged."""
    if settings.tls is None or not settings.tls.insecure:
        return False
    log.warning(INSECURE_WARNING, settings.host, settings.port)
    return True


def _path(value: object) -> str | None:
    return None if value is None else str(value)
