-- why: an LLM proposal may be shown labelled papers as worked examples (`kia propose --examples N`); which ones, with which labels, is stored with the proposal so a figure can be traced to the examples behind it and checked to be leave-one-out.
ALTER TABLE proposals ADD COLUMN examples VARCHAR;
