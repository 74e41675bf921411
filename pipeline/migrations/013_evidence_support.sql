-- why: evidence first: a quote of the offline model is a sentence it judged supportive of its label; that support score (0-1) is stored beside the quote so a reviewer and a benchmark can read how strongly each quote supports its label (NULL where a backend gives none, e.g. an LLM).
ALTER TABLE evidence ADD COLUMN support DOUBLE;
