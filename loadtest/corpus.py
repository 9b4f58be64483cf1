"""Source text for synthetic prompts (original prose, so prompts are deterministic and license-free)."""

CORPUS = """\
The river town woke slowly on market days. Before sunrise the bakers lit their ovens, and by the time
the first boats reached the quay the smell of bread had drifted across the square. Farmers arrived with
carts of apples, cabbages and late pears, and set them out under striped awnings while the clock on the
old customs house struck six. Children ran between the stalls carrying messages, and the ferryman
counted coins into a tin box, complaining to anyone who would listen that the current was stronger than
it had been in years.

A traveller who stayed for a week would learn the rhythm of the place. Mornings belonged to trade and
gossip; afternoons to the long quiet when shutters were closed against the heat; evenings to music from
the tavern by the bridge, where fishermen argued about the weather and the price of nets. Letters came
twice a week with the post rider, and the whole town seemed to know who had received one before the
envelope was opened.

In the library at the top of the hill an old archivist kept records of every flood since the town was
founded. He measured the water each spring with a painted pole and wrote the result in a ledger bound in
green cloth. Engineers from the capital once visited to study the ledger, and they left impressed by its
precision but unconvinced by his theory that the river remembered its old course and would one day
return to it. He did not mind. Patience, he said, was the only instrument a historian truly needed.

Science and engineering advance by careful measurement. A bridge is designed by estimating the loads it
must carry, the strength of its materials and the forces of wind and water, then adding a margin for
what cannot be known. A good engineer writes down every assumption, because the assumption that was
never written is the one that fails. The same discipline applies to software: a system that is measured
can be improved, while a system that is guessed at only changes.

Consider how a large service answers questions. Requests arrive at unpredictable moments, some short and
some long, and each must wait for a share of the machine. If the queue grows faster than the workers can
drain it, latency climbs without limit; if workers sit idle, money is wasted. Operators therefore watch
the time to the first answer, the steady pace of the answer once it flows, and the total time until it
is complete. They compare each new version with the last, and they refuse a change that makes users wait
longer without a good reason.

Winter in the mountains arrives in a single night. The passes close, the shepherds bring their flocks
down to the valleys, and the villages turn inward around their stoves. Stories are told and retold: of
the avalanche that spared the chapel, of the wolf that followed a doctor home, of the summer when the
glacier retreated far enough to reveal a wooden sledge older than anyone could explain. In spring the
snow melts into a hundred streams, and the cycle of work begins again.

Cooking is chemistry practiced with patience. Onions softened slowly in butter become sweet; bread dough
left overnight develops flavour that no shortcut can imitate; a sauce reduced too quickly turns bitter.
Recipes record the experience of many cooks, yet each kitchen differs in its ovens, its water and its
flour, so the careful cook tastes, adjusts and writes notes in the margin for next time.

The history of navigation is a history of better clocks. Sailors could find their latitude from the sun
and stars, but longitude required knowing the time at home with great accuracy. When a reliable marine
chronometer was finally built, voyages became safer, maps became truer and trade routes shifted. A small
mechanism of springs and gears changed the shape of the known world.
"""

# Word swaps for paraphrased prompts (both directions are used).
SYNONYMS = {
    "large": "big",
    "quickly": "fast",
    "slowly": "gradually",
    "old": "ancient",
    "town": "village",
    "answer": "reply",
    "careful": "meticulous",
    "small": "little",
    "begins": "starts",
    "long": "lengthy",
    "better": "improved",
    "every": "each",
    "many": "numerous",
    "good": "fine",
    "arrive": "come",
    "complete": "finished",
    "know": "understand",
    "made": "built",
    "changed": "altered",
    "quiet": "calm",
}

PARAPHRASE_TEMPLATES = (
    "{p}",
    "Please respond to the following. {p}",
    "{p} Answer briefly.",
    "Question: {p}",
    "Here is a text: {p} What do you think?",
)
