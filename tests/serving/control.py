"""Server settings that turn model control (RepositoryModelLoad/Unload) on, whatever the default.

Model control may become opt-in (setting `model_control_mode`); tests of the control plane pass
this so they run the same either way.
"""

from __future__ import annotations

from typing import Any

from serving.settings import ServerSettings

EXPLICIT_CONTROL: dict[str, Any] = (
    {"model_control_mode": "explicit"} if "model_control_mode" in ServerSettings.model_fields else {}
)
