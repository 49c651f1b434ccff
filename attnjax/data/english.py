"""Hand-written English sentences for probing a real pretrained model (Step 5).

* ``POLYSEMY``: polysemous words, each in several sentences of two senses ("bank" of a river
  vs "bank" for money), for the contextual-meaning experiment.
* ``WINOGRAD_PAIRS``: Winograd-style sentence pairs written for attnjax in the manner of
  Levesque et al. (2012): two sentences that differ in one or two words, which flips the
  pronoun's antecedent between the two candidates. Because every pair flips the answer, a
  head that always prefers the first (or the nearer) candidate scores exactly 50%.
* ``SEED_SENTENCES``: the examples of the classic explanations of attention.
* ``PASSAGES`` / ``QUERIES``: a small retrieval set; every query names the passage that
  answers it, and is phrased with few of that passage's words.
* ``ANSWERS``: each query's short gold answer (phrases from its gold passage), for scoring
  what a language model generates from a retrieved passage.
"""

from __future__ import annotations

from typing import NamedTuple


class Sense(NamedTuple):
    word: str
    sense: str
    sentences: tuple[str, ...]


POLYSEMY: tuple[tuple[Sense, Sense], ...] = (
    (
        Sense("bank", "river", (
            "We had a picnic on the grassy bank of the river.",
            "The fisherman sat on the muddy bank and waited for a bite.",
            "Floods washed away part of the bank near the old bridge.",
            "Ducks nested along the bank of the slow stream.",
        )),
        Sense("bank", "money", (
            "She deposited her salary at the bank on Monday.",
            "The bank approved the loan for their new house.",
            "He withdrew cash from the bank to pay the rent.",
            "The bank raised its interest rates again this year.",
        )),
    ),
    (
        Sense("bat", "animal", (
            "A bat flew out of the cave at dusk.",
            "The bat hung upside down from the branch and slept.",
            "At night the bat hunts moths with echolocation.",
            "A small brown bat was living in the attic.",
        )),
        Sense("bat", "sport", (
            "He swung the bat and hit the ball over the fence.",
            "The cricket player picked up a heavier bat.",
            "She bought a new wooden bat for the baseball season.",
            "The batter gripped the bat tightly and waited for the pitch.",
        )),
    ),
    (
        Sense("spring", "season", (
            "The flowers bloom early in the spring.",
            "We plan to travel to Japan next spring.",
            "In spring the days grow longer and warmer.",
            "The farmers plant their crops every spring.",
        )),
        Sense("spring", "coil", (
            "The old mattress had a broken spring poking out.",
            "A steel spring inside the pen pushes the tip out.",
            "The watch stopped because its spring was worn.",
            "Compress the spring and then release the lever.",
        )),
    ),
    (
        Sense("crane", "bird", (
            "A crane waded through the marsh looking for fish.",
            "The crane spread its long wings and flew over the lake.",
            "We watched a crane build its nest in the wetland.",
            "The red-crowned crane is a symbol of long life.",
        )),
        Sense("crane", "machine", (
            "The crane lifted the steel beams onto the roof.",
            "A tall crane towered over the construction site.",
            "The operator moved the crane to unload the ship.",
            "They rented a crane to lift the heavy machinery.",
        )),
    ),
    (
        Sense("bark", "dog", (
            "The dog let out a loud bark at the mailman.",
            "I heard a bark from the neighbour's yard all night.",
            "Her puppy has a high-pitched bark.",
            "The bark of the guard dog scared the thieves away.",
        )),
        Sense("bark", "tree", (
            "The bark of the old oak was rough and cracked.",
            "Beetles live under the bark of dead trees.",
            "Some medicines are made from the bark of the willow.",
            "Deer had stripped the bark from the young trees.",
        )),
    ),
    (
        Sense("mouse", "animal", (
            "The cat chased a mouse across the kitchen floor.",
            "A mouse nibbled through the bag of grain.",
            "The field mouse hid in a hole under the hedge.",
            "We set a trap because a mouse lived in the pantry.",
        )),
        Sense("mouse", "computer", (
            "Click the left button of the mouse to open the file.",
            "My wireless mouse needs new batteries.",
            "Move the mouse to drag the window across the screen.",
            "He plugged the mouse into the laptop's usb port.",
        )),
    ),
    (
        Sense("plant", "vegetation", (
            "Water the plant on the windowsill twice a week.",
            "This plant grows small purple flowers in summer.",
            "The tomato plant needs plenty of sunlight.",
            "She repotted the plant because its roots were crowded.",
        )),
        Sense("plant", "factory", (
            "The car plant employs three thousand workers.",
            "A new power plant was built outside the city.",
            "The chemical plant was closed after the accident.",
            "Workers at the steel plant went on strike.",
        )),
    ),
    (
        Sense("match", "fire", (
            "He struck a match to light the candle.",
            "The wet match would not catch fire.",
            "She dropped the burning match into the fireplace.",
            "Keep the match away from the gas stove.",
        )),
        Sense("match", "game", (
            "Our team won the football match on Saturday.",
            "The tennis match lasted nearly four hours.",
            "Thousands of fans watched the final match of the season.",
            "The chess match ended in a draw.",
        )),
    ),
)


class WinogradPair(NamedTuple):
    """Two sentences and their antecedents; ``candidates`` appear in both sentences, the
    pronoun is the last occurrence of ``pronoun`` in each."""

    sentences: tuple[str, str]
    candidates: tuple[str, str]
    pronoun: str
    answers: tuple[int, int]  # index into candidates, per sentence


WINOGRAD_PAIRS: tuple[WinogradPair, ...] = (
    WinogradPair(("The trophy didn't fit in the suitcase because it was too big.",
                  "The trophy didn't fit in the suitcase because it was too small."),
                 ("trophy", "suitcase"), "it", (0, 1)),
    WinogradPair(("The animal didn't cross the street because it was too tired.",
                  "The animal didn't cross the street because it was too wide."),
                 ("animal", "street"), "it", (0, 1)),
    WinogradPair(("The councilmen refused the demonstrators a permit because they feared "
                  "violence.",
                  "The councilmen refused the demonstrators a permit because they advocated "
                  "violence."),
                 ("councilmen", "demonstrators"), "they", (0, 1)),
    WinogradPair(("The ball broke the window because it was made of steel.",
                  "The ball broke the window because it was made of thin glass."),
                 ("ball", "window"), "it", (0, 1)),
    WinogradPair(("The lawyer asked the witness a question, but he was reluctant to repeat it.",
                  "The lawyer asked the witness a question, but he was reluctant to answer it."),
                 ("lawyer", "witness"), "he", (0, 1)),
    WinogradPair(("The cup would not fit on the shelf because it was too wide.",
                  "The cup would not fit on the shelf because it was too narrow."),
                 ("cup", "shelf"), "it", (0, 1)),
    WinogradPair(("The man couldn't lift his son because he was so weak.",
                  "The man couldn't lift his son because he was so heavy."),
                 ("man", "son"), "he", (0, 1)),
    WinogradPair(("The fish ate the worm because it was hungry.",
                  "The fish ate the worm because it was tasty."),
                 ("fish", "worm"), "it", (0, 1)),
    WinogradPair(("The table won't fit through the doorway because it is too wide.",
                  "The table won't fit through the doorway because it is too narrow."),
                 ("table", "doorway"), "it", (0, 1)),
    WinogradPair(("Joan thanked Susan for all the help she had received.",
                  "Joan thanked Susan for all the help she had given."),
                 ("joan", "susan"), "she", (0, 1)),
    WinogradPair(("The painting hung over the sofa because it was the centrepiece of the "
                  "room.",
                  "The painting hung over the sofa because it was too low for anything else."),
                 ("painting", "sofa"), "it", (0, 1)),
    WinogradPair(("The delivery truck zoomed by the school bus because it was going so fast.",
                  "The delivery truck zoomed by the school bus because it was going so slow."),
                 ("truck", "bus"), "it", (0, 1)),
    WinogradPair(("Frank was upset with Tom because the toaster he had bought from him didn't "
                  "work.",
                  "Frank was upset with Tom because the toaster he had sold him didn't work."),
                 ("frank", "tom"), "he", (0, 1)),
    WinogradPair(("The sculpture rolled off the shelf because it wasn't anchored.",
                  "The sculpture rolled off the shelf because it wasn't level."),
                 ("sculpture", "shelf"), "it", (0, 1)),
    WinogradPair(("The firemen arrived after the police because they were coming from so far "
                  "away.",
                  "The firemen arrived before the police because they were coming from so far "
                  "away."),
                 ("firemen", "police"), "they", (0, 1)),
    WinogradPair(("The student asked the teacher for help because she was confused.",
                  "The student asked the teacher for help because she was an expert."),
                 ("student", "teacher"), "she", (0, 1)),
    WinogradPair(("The car overtook the bicycle because it was faster.",
                  "The car overtook the bicycle because it was slower."),
                 ("car", "bicycle"), "it", (0, 1)),
    WinogradPair(("The cat sat on the mat because it was warm and soft.",
                  "The cat sat on the mat because it was cold and tired."),
                 ("mat", "cat"), "it", (0, 1)),
    WinogradPair(("The laptop did not fit in the bag because it was too large.",
                  "The laptop did not fit in the bag because it was too tiny."),
                 ("laptop", "bag"), "it", (0, 1)),
    WinogradPair(("The mother comforted the girl because she was crying.",
                  "The mother comforted the girl because she was kind."),
                 ("girl", "mother"), "she", (0, 1)),
    WinogradPair(("The rock smashed the vase because it was heavy.",
                  "The rock smashed the vase because it was fragile."),
                 ("rock", "vase"), "it", (0, 1)),
)

SEED_SENTENCES: tuple[tuple[str, tuple[str, str], str, int], ...] = (
    # (sentence, candidates, pronoun, index of the antecedent)
    ("The trophy didn't fit in the suitcase because it was too big.",
     ("trophy", "suitcase"), "it", 0),
    ("The animal didn't cross the street because it was too tired.",
     ("animal", "street"), "it", 0),
    ("Arjun ate the pizza because he was hungry.", ("arjun", "pizza"), "he", 0),
)

PASSAGES: tuple[str, ...] = (
    "Aspirin can irritate the stomach lining and cause bleeding, heartburn or nausea; rare "
    "reactions include ringing in the ears and allergic swelling.",
    "Aspirin was first synthesised by Felix Hoffmann at Bayer in 1897 from salicylic acid, "
    "a compound found in willow bark.",
    "Ibuprofen is a non-steroidal anti-inflammatory drug used to treat pain, fever and "
    "inflammation from conditions such as arthritis.",
    "Paracetamol overdose can seriously damage the liver, so the daily dose for adults "
    "should not exceed four grams.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into glucose, "
    "releasing oxygen as a by-product.",
    "Chlorophyll is the green pigment in leaves that absorbs red and blue light.",
    "The Eiffel Tower in Paris was completed in 1889 for the World's Fair and is about 330 "
    "metres tall.",
    "The Great Wall of China stretches for thousands of kilometres and was built over many "
    "dynasties to keep out invaders.",
    "Mount Everest, on the border of Nepal and China, is the highest mountain above sea "
    "level at 8,849 metres.",
    "The Amazon rainforest produces a large share of the world's oxygen and is home to "
    "millions of species.",
    "Python is a programming language known for readable code, dynamic typing and a large "
    "standard library.",
    "A transformer model processes all tokens of a sequence in parallel using self-attention "
    "instead of recurrence.",
    "Recurrent neural networks read a sequence one step at a time and struggle to remember "
    "information from many steps earlier.",
    "To bake bread, mix flour, water, yeast and salt, let the dough rise, then bake it in a "
    "hot oven.",
    "A good night's sleep for adults is usually seven to nine hours; too little sleep harms "
    "memory and mood.",
    "Regular exercise strengthens the heart, lowers blood pressure and improves mental "
    "health.",
    "The French Revolution began in 1789 with the storming of the Bastille and ended the "
    "monarchy.",
    "World War II ended in 1945 after the surrender of Germany in May and Japan in "
    "September.",
    "The moon's gravity pulls on the oceans and causes the daily rise and fall of the tides.",
    "Earthquakes happen when tectonic plates suddenly slip past each other along a fault.",
    "Honey bees communicate the location of flowers to their hive by performing a waggle "
    "dance.",
    "Whales are mammals: they breathe air through a blowhole and feed their calves with milk.",
    "Coffee contains caffeine, a stimulant that makes people feel more alert and can "
    "disturb sleep.",
    "Green tea is rich in antioxidants and has less caffeine than coffee.",
    "Interest rates set by a central bank influence how expensive it is for households to "
    "borrow money.",
    "Inflation means that prices rise over time, so the same amount of money buys less.",
    "A solar panel converts sunlight directly into electricity using photovoltaic cells.",
    "Wind turbines generate electricity when the wind turns their large blades.",
    "Shakespeare wrote Hamlet, Macbeth and Romeo and Juliet in the late sixteenth and early "
    "seventeenth centuries.",
    "The violin is a string instrument played with a bow and has four strings tuned in "
    "fifths.",
    "Vaccines train the immune system to recognise a virus so that the body can fight off "
    "a later infection.",
    "Antibiotics kill bacteria but do not work against viruses such as the common cold.",
)

# (query, index of the passage that answers it)
QUERIES: tuple[tuple[str, int], ...] = (
    ("What are the side effects of aspirin?", 0),
    ("Who invented aspirin and when?", 1),
    ("Which painkiller reduces swelling in arthritis?", 2),
    ("Can taking too much paracetamol hurt you?", 3),
    ("How do plants make their food from light?", 4),
    ("Why are leaves green?", 5),
    ("How tall is the famous tower in France?", 6),
    ("What is the tallest peak on Earth?", 8),
    ("Which language is popular for easy-to-read software?", 10),
    ("How do transformers handle a sentence without recurrence?", 11),
    ("Why do RNNs forget distant words?", 12),
    ("How do I make a loaf at home?", 13),
    ("How many hours should a grown-up rest at night?", 14),
    ("Is working out good for my heart?", 15),
    ("When did the revolution in France start?", 16),
    ("What causes the sea level to go up and down every day?", 18),
    ("Why does the ground shake?", 19),
    ("How do bees tell each other where food is?", 20),
    ("Are whales fish?", 21),
    ("Why does an espresso keep me awake?", 22),
    ("Why do prices go up every year?", 25),
    ("How does a rooftop panel make power from the sun?", 26),
    ("Who wrote the play about the prince of Denmark?", 28),
    ("Do antibiotics cure a cold?", 31),
)

# Short gold answers for retrieve-then-generate, written from each question's gold passage:
# ``ANSWERS[question]`` is a tuple of groups, each group a tuple of alternative phrases. A
# generated answer is correct when, for every group, at least one of its phrases appears in
# it (case, punctuation and thousands separators aside; a phrase must start at a word
# boundary, so "mammal" matches "mammals"). Every group has a phrase of the gold passage.
ANSWERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "What are the side effects of aspirin?": (
        ("stomach", "bleeding", "heartburn", "nausea", "ringing in the ears", "allergic"),),
    "Who invented aspirin and when?": (("hoffmann",), ("1897",)),
    "Which painkiller reduces swelling in arthritis?": (("ibuprofen",),),
    "Can taking too much paracetamol hurt you?": (("liver",),),
    "How do plants make their food from light?": (("photosynthesis", "glucose"),),
    "Why are leaves green?": (("chlorophyll",),),
    "How tall is the famous tower in France?": (("330",),),
    "What is the tallest peak on Earth?": (("everest",),),
    "Which language is popular for easy-to-read software?": (("python",),),
    "How do transformers handle a sentence without recurrence?": (
        ("attention", "in parallel", "all tokens"),),
    "Why do RNNs forget distant words?": (
        ("one step at a time", "step by step", "sequential", "struggle to remember"),),
    "How do I make a loaf at home?": (("flour", "yeast", "dough"),),
    "How many hours should a grown-up rest at night?": (("seven", "7"), ("nine", "9")),
    "Is working out good for my heart?": (("strengthen", "stronger", "blood pressure"),),
    "When did the revolution in France start?": (("1789",),),
    "What causes the sea level to go up and down every day?": (("moon",),),
    "Why does the ground shake?": (("tectonic", "plates", "fault"),),
    "How do bees tell each other where food is?": (("dance", "waggle"),),
    "Are whales fish?": (("mammal",),),
    "Why does an espresso keep me awake?": (("caffeine",),),
    "Why do prices go up every year?": (("inflation",),),
    "How does a rooftop panel make power from the sun?": (("photovoltaic", "cells"),),
    "Who wrote the play about the prince of Denmark?": (("shakespeare",),),
    "Do antibiotics cure a cold?": (("virus", "viral"),),
}
