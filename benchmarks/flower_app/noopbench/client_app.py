"""The ClientApp: returns the arrays it received, unchanged, as hierfl's no-op clients do."""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """No training: the global arrays go back as this node's update, with a sample count."""
    content = RecordDict({"arrays": msg.content["arrays"],
                          "metrics": MetricRecord({"num-examples": 144})})
    return Message(content=content, reply_to=msg)
