"""MQTT topics paho would refuse to publish to are config errors, not a silent spool (issue 20)."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest

from edge import config
from edge.errors import ConfigError

BAD = {
    "edge/+/porch": "'+' cannot be in a topic published to",
    "edge/#": "'#' cannot be in a topic published to",
    "a/+/#": "'#', '+' cannot be in a topic published to",
    "/": "a topic needs at least one level",
}


@pytest.mark.parametrize("topic", BAD)
def test_wildcard_topic_is_rejected_with_its_line(topic):
    text = f"outputs:\n  - log: {{}}\n  - mqtt:\n      topic: '{topic}'\n"
    with pytest.raises(ConfigError) as e:
        config.parse(text, "edge.yaml")
    assert str(e.value).startswith("edge.yaml:4:7: outputs[1].mqtt.topic: ")
    assert BAD[topic] in str(e.value)


def test_discovery_prefix_too():
    with pytest.raises(ConfigError, match="discovery_prefix: '#' cannot be"):
        config.parse("outputs:\n  - mqtt: {discovery_prefix: 'ha/#'}\n", "edge.yaml")


@pytest.mark.parametrize("topic", ["edge/porch", "/edge/porch/", "a//b"])
def test_topics_paho_publishes_to_pass(topic):
    cfg = config.parse(f"outputs:\n  - mqtt: {{topic: '{topic}'}}\n", "edge.yaml")
    assert cfg.outputs[0].mqtt.topic == topic
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.publish(topic.rstrip("/") + "/events", "x")  # paho accepts it (queued, not sent)


@pytest.mark.parametrize("topic", ["edge/+/porch", "edge/#"])
def test_paho_itself_refuses_them(topic):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    with pytest.raises(ValueError, match="wildcards"):
        client.publish(topic + "/events", "x")
