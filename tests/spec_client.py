"""The Python client example from the Data Exports API page, verbatim but for BASE_URL and
API_KEY (set by the test). It must work against our server unchanged."""
# ruff: noqa
# mypy: ignore-errors

import requests
import time

API_KEY = "sm_your_api_key"
BASE_URL = "https://api.sealmetrics.com/api/v1"


def export_data(site_id, export_type, date_from, date_to, filters=None):
    """Create export and return download URL."""

    # Create export
    response = requests.post(
        f"{BASE_URL}/exports",
        headers={"X-API-Key": API_KEY},
        params={"site_id": site_id},
        json={
            "export_type": export_type,
            "format": "csv",
            "date_from": date_from,
            "date_to": date_to,
            "filters": filters or {}
        }
    )
    response.raise_for_status()
    data = response.json()

    job = data["job"]
    job_id = job["job_id"]

    # Poll until complete (for large exports)
    while job["status"] in ("pending", "estimating", "generating"):
        time.sleep(2)
        response = requests.get(
            f"{BASE_URL}/exports/{job_id}",
            headers={"X-API-Key": API_KEY},
            params={"site_id": site_id}
        )
        job = response.json()

    if job["status"] == "failed":
        raise Exception(f"Export failed: {job.get('error_message')}")

    return job["download_url"]


def download_file(download_url, output_path):
    """Download export file."""
    response = requests.get(download_url, stream=True)
    response.raise_for_status()

    with open(output_path, "wb") as f:
        for chunk in response.iter_content(chunk_size=8192):
            f.write(chunk)
