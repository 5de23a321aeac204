"""Regression tests for the bugs the reliability scenarios found, one per behaviour."""

from __future__ import annotations

import orjson
import pytest

from shared.codec import decode_control
from shared.errors import CodecError

pytestmark = [pytest.mark.reliability]

@pytest.mark.parametrize("action", [["add"], {"add": 1}, 5, None, True])
def test_a_control_message_whose_action_is_not_a_string_is_a_codec_error(action):

    with pytest.raises(CodecError):
        decode_control(orjson.dumps({"action": action, "ticker": "AAPL"}))
