"""The gRPC face's own code on generated requests: naming a request's object never fails.

``subject`` runs while a failure is being reported; an exception there would
escape the wrapper and reach the client as UNKNOWN (the fuzzer found one).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crio.api import api_pb2 as api
from crio.server.service import SERVICES, subject
from support.protofuzz import messages

REQUESTS = sorted(
    {
        method.input_type.name
        for service in SERVICES
        for method in api.DESCRIPTOR.services_by_name[service].methods
    }
)


@pytest.mark.parametrize("request_type", REQUESTS)
def test_subject_of_any_request(request_type: str) -> None:
    cls = getattr(api, request_type)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=messages(cls, depth=3))
    def named(request: object) -> None:
        assert isinstance(subject(request), str)

    named()


@given(name=st.text(min_size=1, max_size=20))
def test_subjects_name_the_object(name: str) -> None:
    pod = api.RunPodSandboxRequest(
        config=api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name=name, namespace="ns"))
    )
    assert subject(pod) == f"pod sandbox ns/{name}"
    ctr = api.CreateContainerRequest(
        config=api.ContainerConfig(metadata=api.ContainerMetadata(name=name))
    )
    assert subject(ctr) == f"container {name}"
    assert subject(api.StopContainerRequest(container_id="c1")) == "container c1"
    assert subject(api.PullImageRequest(image=api.ImageSpec(image=name))) == f"image {name}"
    assert subject(api.VersionRequest()) == ""
