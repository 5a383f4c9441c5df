"""Text before it reaches a model: rows and samples, chat formats, tokenizers.

    records.py    JSONL rows -> Sample (prompt, response, label), row kinds, scores written back,
                  atomic writes
    formats.py    the chat formats the cards use (Pygmalion for CHAI, OpenAssistant's tokens)
    tokenizer.py  a Sample -> ids exactly as the model's tokenizer does (tokenizer.json or spm.model)
    spm.py        SentencePiece's spm.model, read without sentencepiece (DeBERTa-v2)
    templates.py  chat templates, rendered in Jinja2's sandbox as transformers renders them
    datasets.py   files and Hub datasets -> rows; the published layouts' adapters (both halves read them)

Shared by scoring and training. May import: the shared modules at minirm's top (errors, config,
hub) and models; never minirm.scoring or minirm.training.
"""
