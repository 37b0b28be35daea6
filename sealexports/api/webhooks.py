"""/api/v1/webhooks: an account's endpoints, their deliveries and attempts. Endpoints belong to
the account, so only account-wide read keys manage them: a key bound to one site gets 403."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from msgspec import Meta

from sealexports.api import openapi
from sealexports.errors import Forbidden
from sealexports.services import Services
from sealexports.storage import webhooks as store
from sealexports.storage.accounts import Account
from sealexports.webhooks import endpoints

EndpointId = Annotated[str, Parameter(description="The endpoint's id (wh_...).")]
DeliveryId = Annotated[str, Parameter(description="The delivery's id (whd_...).")]


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, Meta(description="http(s) URL; public addresses only unless the operator allows.")]
    events: Annotated[
        list[str] | None, Meta(description="Event types (default: export.completed and export.failed).")
    ] = None


class WebhookOut(msgspec.Struct):
    id: Annotated[str, Meta(description="The endpoint's id.")]
    url: str
    events: list[str]
    status: Annotated[str, Meta(description="active, or disabled (after a 410 Gone).")]
    disabled_reason: str | None
    created_at: str


class SecretOut(msgspec.Struct):
    id: str
    secret: Annotated[str, Meta(description="The signing secret: shown this once.")]


class WebhooksOut(msgspec.Struct):
    webhooks: list[WebhookOut]


class AttemptOut(msgspec.Struct):
    attempt: int
    started_at: str
    status_code: Annotated[int | None, Meta(description="The receiver's HTTP status; null: no answer.")]
    error: str | None
    duration_ms: Annotated[float, Meta(description="Response time.")]


class DeliveryOut(msgspec.Struct):
    id: Annotated[str, Meta(description="The delivery id (X-Sealexports-Delivery, and the body's id).")]
    webhook_id: str
    type: str
    job_id: str | None
    status: Annotated[str, Meta(description="pending (due, or waiting for a retry), delivered or failed.")]
    created_at: str
    attempts: list[AttemptOut]


class DeliveriesOut(msgspec.Struct):
    deliveries: list[DeliveryOut]


def _account_wide(account: Account) -> int:
    if account.key_site is not None:
        raise Forbidden(
            f"this API key works on site {account.key_site!r} only; webhooks belong to the whole "
            "account: use an account-wide read key (sealexports keys create --account NAME)"
        )
    return account.id


def provide_endpoint(
    webhook_id: EndpointId, account: NamedDependency[Account], services: NamedDependency[Services]
) -> store.Endpoint:
    """The `endpoint` dependency: the account's endpoint the path names (a read: on a worker thread)."""
    return store.get_endpoint(services.db.get(), webhook_id, account_id=_account_wide(account))


def _out(e: store.Endpoint) -> WebhookOut:
    status = "disabled" if e.disabled_at else "active"
    return WebhookOut(e.endpoint_id, e.url, e.event_list, status, e.disabled_reason, e.created_at)


def _delivery_out(services: Services, d: store.Delivery) -> DeliveryOut:
    conn = services.db.get()
    endpoint = store.endpoint_by_rowid(conn, d.endpoint_id)
    tries = [AttemptOut(a.attempt, a.started_at, a.status_code, a.error, a.duration_ms)
             for a in store.attempts(conn, d)]  # fmt: skip
    return DeliveryOut(
        d.delivery_id, endpoint.endpoint_id, d.event_type, d.job_id, d.status, d.created_at, tries
    )


class WebhooksController(Controller):
    path = "/api/v1/webhooks"
    tags = ("webhooks",)
    dependencies = {"endpoint": Provide(provide_endpoint, sync_to_thread=True)}  # noqa: RUF012 (Litestar's own pattern)

    @get("/", sync_to_thread=True, summary="List webhook endpoints", operation_id="listWebhooks",
         responses=openapi.WEBHOOK)  # fmt: skip
    def list(self, account: NamedDependency[Account], services: NamedDependency[Services]) -> WebhooksOut:
        """The account's endpoints (never their secrets)."""
        owner = _account_wide(account)
        return WebhooksOut([_out(e) for e in store.list_endpoints(services.db.get(), account_id=owner)])

    @post("/", status_code=201, sync_to_thread=True, summary="Add a webhook endpoint",
          operation_id="createWebhook", responses=openapi.WEBHOOK_CREATE)  # fmt: skip
    def create(
        self,
        data: JSONBody[WebhookIn],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
    ) -> SecretOut:
        """A new endpoint; the answer holds its signing secret, shown this once."""
        owner = _account_wide(account)
        endpoint, secret = endpoints.add(services.db.get(), services.settings, owner, data.url, data.events)
        return SecretOut(endpoint.endpoint_id, secret)

    @delete("/{webhook_id:str}", status_code=204, sync_to_thread=True, summary="Remove a webhook endpoint",
            operation_id="deleteWebhook", responses=openapi.WEBHOOK)  # fmt: skip
    def remove(self, endpoint: NamedDependency[store.Endpoint], services: NamedDependency[Services]) -> None:
        """The endpoint goes, with its pending deliveries and its history."""
        store.remove_endpoint(services.db.get(), endpoint)

    @post("/{webhook_id:str}/test", status_code=202, sync_to_thread=True, summary="Send a test event",
          operation_id="testWebhook", responses=openapi.WEBHOOK)  # fmt: skip
    def test(
        self, endpoint: NamedDependency[store.Endpoint], services: NamedDependency[Services]
    ) -> DeliveryOut:
        """Queue a webhook.test delivery (the workers send it)."""
        return _delivery_out(services, endpoints.send_test(services.db.get(), endpoint))

    @post("/{webhook_id:str}/rotate", status_code=200, sync_to_thread=True, summary="Rotate the secret",
          operation_id="rotateWebhookSecret", responses=openapi.WEBHOOK)  # fmt: skip
    def rotate(
        self, endpoint: NamedDependency[store.Endpoint], services: NamedDependency[Services]
    ) -> SecretOut:
        """A new signing secret (shown once); the old one also signs for 24 hours."""
        return SecretOut(endpoint.endpoint_id, endpoints.rotate(services.db.get(), endpoint))

    @get("/{webhook_id:str}/deliveries", sync_to_thread=True, summary="An endpoint's deliveries",
         operation_id="listWebhookDeliveries", responses=openapi.WEBHOOK)  # fmt: skip
    def deliveries(
        self,
        endpoint: NamedDependency[store.Endpoint],
        services: NamedDependency[Services],
        limit: Annotated[int, Parameter(ge=1, le=1000, description="At most this many, newest first.")] = 100,
    ) -> DeliveriesOut:
        """The endpoint's deliveries, newest first, each with every attempt (status, response time)."""
        found = store.list_deliveries(services.db.get(), endpoint=endpoint, limit=limit)
        return DeliveriesOut([_delivery_out(services, d) for d in found])

    @post("/deliveries/{delivery_id:str}/replay", status_code=202, sync_to_thread=True,
          summary="Replay a delivery", operation_id="replayWebhookDelivery",
          responses=openapi.WEBHOOK)  # fmt: skip
    def replay(
        self, delivery_id: DeliveryId, account: NamedDependency[Account], services: NamedDependency[Services]
    ) -> DeliveryOut:
        """The delivery's event again, as a new delivery with a new id."""
        conn = services.db.get()
        delivery = store.get_delivery(conn, delivery_id, account_id=_account_wide(account))
        return _delivery_out(services, endpoints.replay(conn, delivery))
