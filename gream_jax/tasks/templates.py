"""Paraphrased prompt templates per task (our own wording; the reference inherits LC-Rec's).

Each template is a `str.format` pattern. One is drawn per example with the caller's seeded RNG, so a
model cannot key on one phrasing. Fields: {history} (SIDs joined by ", "), {history_titles},
{title}, {description}, {sid}, {query}, {preference}.
"""

SEQREC = (
    "Here are the items this user interacted with, oldest first: {history}. Which item comes next?",
    "A user's recent history is {history}. Predict the next item they will choose.",
    "Given the interaction sequence {history}, recommend the single most likely next item.",
    "The user has engaged with {history} in this order. What should be recommended next?",
    "Using the history {history}, name the item this user is most likely to pick next.",
    "Sequence so far: {history}. Output the identifier of the next item.",
)

ITEM2INDEX = (
    "Which item has the title \"{title}\"? Answer with its identifier.",
    "Give the identifier of the item titled \"{title}\".",
    "An item is described as follows: {title}. {description} What is its identifier?",
    "Find the item matching this description: \"{title}\" - {description}",
    "Map the title \"{title}\" to its item identifier.",
)

INDEX2ITEM = (
    "What is the title of item {sid}?",
    "Tell me the name of the item with identifier {sid}.",
    "Describe item {sid}: give its title.",
    "Item {sid} refers to which title?",
    "Which title does the identifier {sid} stand for?",
)

INDEX2ITEM_DESCRIPTION = (
    "Give the title and a short description of item {sid}.",
    "Describe the item {sid}: its title, then what it is about.",
    "What is item {sid}? Name it and describe it briefly.",
)

FUSION_TITLE = (
    "The user interacted with {history}. What is the title of the item they will choose next?",
    "After the items {history}, which title is the user likely to pick next?",
    "History: {history}. Predict the title of the next item.",
    "Based on the sequence {history}, name the next item's title.",
)

FUSION_SID = (
    "The user watched or bought, in order: {history_titles}. Give the identifier of the next item.",
    "Here are the titles of a user's recent items: {history_titles}. Which item comes next?",
    "Recent titles: {history_titles}. Recommend the next item by its identifier.",
    "A user chose {history_titles}, in that order. Predict the next item's identifier.",
)

ITEMSEARCH = (
    "{preference} Right now the user says: \"{query}\" Which item fits?",
    "User profile: {preference} Request: \"{query}\" Recommend one item.",
    "Knowing that {preference_lc} and that the user asks \"{query}\", which item should we suggest?",
    "Search request: \"{query}\". About the user: {preference} Give the best matching item.",
)

PREFERENCE = (
    "From the history {history}, summarise what this user likes.",
    "Describe the preferences of a user who interacted with {history}.",
    "What can you infer about the tastes of someone whose history is {history}?",
    "Summarise the user's interests given {history}.",
)

REASONING = (
    "A user's history, oldest first: {history}. Think step by step about what they want, then recommend the next item.",
    "Given the interaction sequence {history}, reason about the user's preferences and intent before naming the next item.",
    "History: {history}. Analyse it, infer the current intent, and recommend one item.",
)

QUERY = (
    "I'm in the mood for something {attrs}.",
    "Looking for a {attrs} pick.",
    "Anything {attrs} you would suggest?",
    "Show me something {attrs}.",
)

ALL = {
    "seqrec": SEQREC, "item2index": ITEM2INDEX, "index2item": INDEX2ITEM,
    "index2item_description": INDEX2ITEM_DESCRIPTION, "fusion_title": FUSION_TITLE,
    "fusion_sid": FUSION_SID, "itemsearch": ITEMSEARCH, "preferenceobtain": PREFERENCE,
    "reasoning": REASONING, "query": QUERY,
}
