"""The settings of the ``openscale`` monitoring backend: the ``monitoring.openscale:`` section.

Its own module so that :mod:`modelcycle.platforms.ibm.openscale` (imported by
``modelcycle --help`` for its commands) imports no pydantic at module level.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["OpenScaleConfig"]


class OpenScaleConfig(BaseModel):
    """Watson OpenScale (``monitoring.backend: openscale``). The API key is read from the variable
    named by ``api_key_env``; it never goes into ``modelcycle.yaml``. Without ``username`` the key
    is exchanged at IBM Cloud IAM (``iam_url``); with it, at the Cloud Pak for Data cluster ``url``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    url: str = Field(default="https://api.aiopenscale.cloud.ibm.com", description="the OpenScale service URL")
    service_instance_id: str | None = Field(default=None, description="the OpenScale instance (GUID)")
    api_key_env: str = Field(default="IBM_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="name of the variable holding the API key")
    username: str | None = Field(default=None, description="Cloud Pak for Data user the API key belongs to")
    iam_url: str | None = Field(default=None, description="IBM Cloud IAM token URL; unset: IBM Cloud's")
    data_mart_id: str | None = Field(default=None, description="default: the instance's first data mart (created when none)")
    service_provider: str = Field(default="modelcycle", min_length=1, description="name of the custom ML provider (created when missing)")
    verify_tls: bool = Field(default=True, description="verify the service's TLS certificate")
    timeout_s: float = Field(default=300.0, gt=0, description="limit for one operation to finish")
    batch_records: int = Field(default=200, gt=0, le=5000, description="records per store_records request")

    @model_validator(mode="after")
    def _needs_an_instance(self) -> OpenScaleConfig:
        if not self.service_instance_id:
            raise ValueError("backend openscale needs monitoring.openscale.service_instance_id (the instance's GUID)")
        return self
