"""What turns files into facts: the path grammar, the roots, the kinds registry, scopes and the indexer.

:mod:`.grammar` names every entity's path (both directions); :mod:`.roots` lists and reads local and
remote trees behind one interface; :mod:`.kinds` says, per entity kind, how its header is read and its
row filled; :mod:`.scopes` says which subtrees a run looks at; :mod:`.indexer` runs scan, diff, read
and write, with :mod:`.snapshot` (what the catalog holds) and :mod:`.writes` (bulk upserts).
"""
