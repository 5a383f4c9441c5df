"""The older Aira RewardModel (nicholasKluge/RewardModel as first published), rebuilt for the
tests from the published facts of its remote code (reward_model.py, reward_model_config.py)
and config.json:

- `class RewardModel(BertPreTrainedModel)` with, in this order, `bert = BertModel(config)`
  (pooler included: its weights are saved, never used), `cls_layer1 = Linear(hidden_size,
  linear_layer)`, `relu1`, `ff1 = Linear(linear_layer, linear_layer)`, `tanh1`,
  `ff2 = Linear(linear_layer, linear_layer_output)`;
- `forward(input_ids, attention_mask, alpha=1)`: [CLS] of the last hidden state through the
  head, times alpha when not training; no token_type_ids (all 0);
- config.json: architectures ["RewardModel"], model_type "bert-reward", an auto_map to the two
  remote-code files, linear_layer 128, linear_layer_output 1, and no alpha field.

It is the reference minirm is checked against; minirm itself never runs remote code.
"""

from __future__ import annotations

import torch
import transformers as tf

AUTO_MAP = {"AutoConfig": "reward_model_config.RewardModelConfig", "AutoModel": "reward_model.RewardModel"}


class RewardModelConfig(tf.BertConfig):
    model_type = "bert-reward"

    def __init__(self, linear_layer: int = 128, linear_layer_output: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.linear_layer = linear_layer
        self.linear_layer_output = linear_layer_output
        self.auto_map = dict(AUTO_MAP)


class RewardModel(tf.BertPreTrainedModel):
    config_class = RewardModelConfig

    def __init__(self, config: RewardModelConfig):
        super().__init__(config)
        self.bert = tf.BertModel(config)
        self.cls_layer1 = torch.nn.Linear(config.hidden_size, config.linear_layer)
        self.relu1 = torch.nn.ReLU()
        self.ff1 = torch.nn.Linear(config.linear_layer, config.linear_layer)
        self.tanh1 = torch.nn.Tanh()
        self.ff2 = torch.nn.Linear(config.linear_layer, config.linear_layer_output)
        self.post_init()

    def forward(self, input_ids, attention_mask, alpha=1):
        cls_state = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        out = self.ff2(self.tanh1(self.ff1(self.relu1(self.cls_layer1(cls_state)))))
        return out if self.training else out * alpha


def tiny_reward_model(bert_config: tf.BertConfig, linear_layer: int = 16) -> RewardModel:
    """A small RewardModel on `bert_config`'s encoder sizes."""
    fields = {k: v for k, v in bert_config.to_dict().items() if k not in ("model_type", "architectures")}
    return RewardModel(RewardModelConfig(linear_layer=linear_layer, **fields))
