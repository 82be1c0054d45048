import pytest

from mask_recipes import TINY


@pytest.fixture(params=TINY)
def tiny_name(request):
    return request.param
