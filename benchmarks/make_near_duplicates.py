"""Write benchmarks/data/near_duplicates.jsonl: labelled prompt pairs for the semantic cache.

    python benchmarks/make_near_duplicates.py

Each line: {"a": ..., "b": ..., "same": true|false, "kind": ...}. `same` pairs are paraphrases whose
answers are interchangeable (a semantic hit is right); the others are small edits that change the
answer (numbers, negation, operators, direction, language/library names, code identifiers, Unicode
forms, topic qualifiers): a semantic hit there serves a wrong answer. Hand-written templates, a fixed
seed; the file is checked in so figures can be reproduced without this script.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "near_duplicates.jsonl"

# --- paraphrases (hand-written): base, then paraphrases of it --------------------------------------
PARAPHRASES: list[tuple[str, list[str]]] = [
    (
        "Tell me three interesting facts about Japan.",
        [
            "Give me 3 interesting facts about Japan.",
            "What are three interesting facts about Japan?",
            "List three interesting facts about Japan.",
        ],
    ),
    (
        "Write a short poem about the ocean.",
        [
            "Compose a short poem about the ocean.",
            "Write a brief poem about the ocean.",
            "Please write a short poem about the ocean.",
        ],
    ),
    (
        "Explain photosynthesis to a ten year old.",
        [
            "Explain photosynthesis to a 10 year old.",
            "Describe photosynthesis to a ten year old.",
            "How would you explain photosynthesis to a 10-year-old child?",
        ],
    ),
    (
        "What are the main criticisms of supply-side economics?",
        [
            "What are the biggest criticisms of supply-side economics?",
            "What are the major criticisms of supply-side economics?",
            "Which criticisms of supply-side economics are the main ones?",
        ],
    ),
    (
        "Summarize the history of the Roman Empire in two sentences.",
        [
            "In two sentences, summarize the history of the Roman Empire.",
            "Give a two-sentence summary of the history of the Roman Empire.",
            "Summarise the history of the Roman Empire in 2 sentences.",
        ],
    ),
    (
        "How do I reverse a string in Python?",
        [
            "How can I reverse a Python string?",
            "How do you reverse a string in Python?",
            "What's the way to reverse a string in Python?",
        ],
    ),
    (
        "What is the capital of Australia?",
        [
            "What's the capital of Australia?",
            "Which city is the capital of Australia?",
            "Tell me the capital of Australia.",
        ],
    ),
    (
        "How do I sort a list of dictionaries by a key in Python?",
        [
            "How can I sort a list of dicts by key in Python?",
            "In Python, how do I sort a list of dictionaries by a key?",
            "Sort a list of dictionaries by a key in Python: how?",
        ],
    ),
    (
        "What is the difference between TCP and UDP?",
        [
            "What's the difference between TCP and UDP?",
            "Explain the difference between TCP and UDP.",
            "How does TCP differ from UDP?",
        ],
    ),
    (
        "Give me a recipe for banana bread.",
        [
            "Can you give me a recipe for banana bread?",
            "Share a recipe for banana bread.",
            "I need a banana bread recipe.",
        ],
    ),
    (
        "What causes the seasons on Earth?",
        [
            "Why does Earth have seasons?",
            "What causes Earth's seasons?",
            "What causes the seasons on the Earth?",
        ],
    ),
    (
        "How do I center a div with CSS?",
        [
            "How can I center a div using CSS?",
            "How do you center a div in CSS?",
            "Center a div with CSS: how?",
        ],
    ),
    (
        "List five tips for better sleep.",
        [
            "Give me 5 tips for better sleep.",
            "What are five tips for better sleep?",
            "Provide five tips for sleeping better.",
        ],
    ),
    (
        "Explain how a hash table works.",
        [
            "Describe how a hash table works.",
            "How does a hash table work?",
            "Can you explain how hash tables work?",
        ],
    ),
    (
        "What is the boiling point of water at sea level?",
        [
            "At sea level, what is the boiling point of water?",
            "What's the boiling point of water at sea level?",
            "At what temperature does water boil at sea level?",
        ],
    ),
    (
        "Translate 'good morning' into Spanish.",
        [
            "How do you say 'good morning' in Spanish?",
            "Translate 'good morning' to Spanish.",
            "What is 'good morning' in Spanish?",
        ],
    ),
    (
        "Write a haiku about autumn leaves.",
        [
            "Compose a haiku about autumn leaves.",
            "Write a haiku on autumn leaves.",
            "Please write a haiku about autumn leaves.",
        ],
    ),
    (
        "What are the symptoms of dehydration?",
        [
            "What are dehydration symptoms?",
            "Which symptoms does dehydration cause?",
            "List the symptoms of dehydration.",
        ],
    ),
    (
        "How do I undo the last commit in git?",
        [
            "How can I undo my last git commit?",
            "How do you undo the last commit in git?",
            "Undo the last commit in git: how?",
        ],
    ),
    (
        "Explain the theory of relativity simply.",
        [
            "Explain the theory of relativity in simple terms.",
            "Give a simple explanation of the theory of relativity.",
            "Describe the theory of relativity simply.",
        ],
    ),
    (
        "What is the time complexity of binary search?",
        [
            "What's the time complexity of binary search?",
            "How fast is binary search in big-O terms?",
            "What is binary search's time complexity?",
        ],
    ),
    (
        "Recommend three science fiction novels.",
        [
            "Recommend 3 science fiction novels.",
            "Suggest three sci-fi novels.",
            "What are three science fiction novels you would recommend?",
        ],
    ),
    (
        "How do I make a cup of green tea?",
        [
            "How can I make a cup of green tea?",
            "How do you make green tea?",
            "What's the way to make a cup of green tea?",
        ],
    ),
    (
        "Why is the sky blue?",
        ["Why is the sky blue in color?", "What makes the sky blue?", "Why's the sky blue?"],
    ),
    (
        "What is the population of Canada?",
        [
            "How many people live in Canada?",
            "What's the population of Canada?",
            "Tell me the population of Canada.",
        ],
    ),
    (
        "How do I read a CSV file with pandas?",
        [
            "How can I read a CSV file using pandas?",
            "How do you read a CSV file in pandas?",
            "Read a CSV file with pandas: how?",
        ],
    ),
    (
        "What does the Python function zip() do?",
        [
            "What does zip() do in Python?",
            "Explain the Python function zip().",
            "How does Python's zip() function work?",
        ],
    ),
    (
        "Give me an example of a closure in JavaScript.",
        [
            "Show me an example of a closure in JavaScript.",
            "Can you give an example of a JavaScript closure?",
            "Provide an example of a closure in JavaScript.",
        ],
    ),
    (
        "What is the tallest mountain in Africa?",
        [
            "What's the tallest mountain in Africa?",
            "Which mountain is the tallest in Africa?",
            "Name the tallest mountain in Africa.",
        ],
    ),
    (
        "Describe the water cycle.",
        ["Explain the water cycle.", "Can you describe the water cycle?", "How does the water cycle work?"],
    ),
    (
        "Write a SQL query to count rows in a table named orders.",
        [
            "Write a SQL query that counts the rows in a table named orders.",
            "Give a SQL query to count rows in the orders table.",
            "How do I count the rows of a table named orders in SQL?",
        ],
    ),
    (
        "What are the benefits of regular exercise?",
        [
            "What are the benefits of exercising regularly?",
            "List the benefits of regular exercise.",
            "Why is regular exercise good for you?",
        ],
    ),
    (
        "How many bones are in the adult human body?",
        [
            "How many bones does an adult human body have?",
            "How many bones are there in the adult human body?",
            "What is the number of bones in an adult human body?",
        ],
    ),
    (
        "Explain what a neural network is.",
        [
            "Describe what a neural network is.",
            "What is a neural network?",
            "Can you explain neural networks?",
        ],
    ),
    (
        "Who wrote Pride and Prejudice?",
        [
            "Who is the author of Pride and Prejudice?",
            "Who's the writer of Pride and Prejudice?",
            "Pride and Prejudice was written by whom?",
        ],
    ),
    (
        "What is the speed of light in a vacuum?",
        [
            "What's the speed of light in a vacuum?",
            "How fast does light travel in a vacuum?",
            "In a vacuum, what is the speed of light?",
        ],
    ),
    (
        "Suggest a name for a coffee shop.",
        [
            "Give me a name for a coffee shop.",
            "What's a good name for a coffee shop?",
            "Suggest a coffee shop name.",
        ],
    ),
    (
        "How do I install numpy with pip?",
        [
            "How can I install numpy using pip?",
            "How do you pip install numpy?",
            "Install numpy with pip: how?",
        ],
    ),
    (
        "What is the largest planet in the solar system?",
        [
            "Which planet is the largest in the solar system?",
            "What's the largest planet in our solar system?",
            "Name the largest planet in the solar system.",
        ],
    ),
    (
        "Explain recursion with an example.",
        [
            "Describe recursion with an example.",
            "Explain recursion using an example.",
            "Can you explain recursion with an example?",
        ],
    ),
]


def surface_variants(text: str) -> list[str]:
    """What a user types differently for the same question: spacing, case, punctuation, politeness."""
    return [
        "  " + text.replace(" ", "  ") + "\n",
        text.lower(),
        text.rstrip(".?!") if text[-1] in ".?!" else text + "?",
        "Please " + text[0].lower() + text[1:],
    ]


# --- edits that change the answer -------------------------------------------------------------------
def number_edits(rng: random.Random) -> list[tuple[str, str]]:
    temps = [
        "What is {a} * {b}?",
        "What is {a} + {b}?",
        "Compute {a} divided by {b}.",
        "What is {a} to the power of {b}?",
        "Write a Python function that returns the first {a} prime numbers.",
        "List {a} ideas for a birthday party.",
        "Give me {a} tips for learning to code.",
        "Convert {a} kilometers to miles.",
        "What is {a}% of {b}?",
        "How many days are there in {a} weeks?",
        "Round {a}.{b} to one decimal place.",
        "Write a {a}-line poem about the sea.",
        "What year was {a} years after {b}?",
        "Is {a} a prime number?",
        "Summarize the French Revolution in {a} sentences.",
        "Create a {a}-day workout plan.",
    ]
    out = []
    for t in temps:
        for _ in range(3):
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            a2 = a + rng.choice([1, -1, 10])
            out.append((t.format(a=a, b=b), t.format(a=a2, b=b)))
    out += [
        ("What is 12 * 13?", "What is 12 * 14?"),
        ("What is 10 - 3?", "What is 3 - 10?"),
        ("What is 144 / 12?", "What is 12 / 144?"),
        ("Give me three tips for sleeping.", "Give me four tips for sleeping."),
        ("What happened in 1969?", "What happened in 1968?"),
        ("Explain the first law of thermodynamics.", "Explain the second law of thermodynamics."),
    ]
    return out


def unicode_edits() -> list[tuple[str, str]]:
    return [
        ("What is 2⁸?", "What is 28?"),
        ("Simplify x² + 2x.", "Simplify x2 + 2x."),
        ("What is 10³?", "What is 103?"),
        ("Balance the equation H₂ + O₂ = H₂O.", "Balance the equation H2 + O2 = H2O + O."),
        ("What is 3⁴ - 1?", "What is 34 - 1?"),
        ("Evaluate 5² * 2.", "Evaluate 52 * 2."),
    ]


NEGATION = [
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
    ("Why does my code work?", "Why doesn't my code work?"),
    (
        "Write a function that modifies the list in place.",
        "Write a function that does not modify the list in place.",
    ),
    ("Is this statement true: all cats are mammals?", "Is this statement not true: all cats are mammals?"),
    ("Should I use a VPN on public Wi-Fi?", "Should I never use a VPN on public Wi-Fi?"),
    ("List foods that contain gluten.", "List foods that contain no gluten."),
    ("How can I sleep with caffeine in my system?", "How can I sleep without caffeine in my system?"),
    ("Why is the sky blue during the day?", "Why is the sky not blue during the day?"),
    ("Which countries use the euro?", "Which countries do not use the euro?"),
    ("Is Python a compiled language?", "Isn't Python a compiled language?"),
    ("Explain why the program terminates.", "Explain why the program never terminates."),
    ("Write a regex that matches digits.", "Write a regex that matches non digits."),
    ("What should I do when the server responds?", "What should I do when the server does not respond?"),
    ("Can I run Docker with root privileges?", "Can I run Docker without root privileges?"),
    (
        "Write SQL to find customers who placed orders.",
        "Write SQL to find customers who never placed orders.",
    ),
    ("Is it legal to record a phone call?", "Is it not legal to record a phone call?"),
    ("Describe a situation where caching helps.", "Describe a situation where caching does not help."),
    ("Why do vaccines cause immunity?", "Why don't vaccines cause immunity?"),
    ("List animals that can swim.", "List animals that cannot swim."),
    ("Should I refrigerate tomatoes?", "Should I not refrigerate tomatoes?"),
    ("Write a test that expects an exception.", "Write a test that expects no exception."),
    ("Is zero an even number?", "Is zero not an even number?"),
    ("Which planets have rings?", "Which planets have no rings?"),
    ("How do I merge branches with conflicts?", "How do I merge branches without conflicts?"),
    ("Explain when to use recursion.", "Explain when not to use recursion."),
    ("Is coffee bad for your health?", "Is coffee not bad for your health?"),
    ("Find the files that were modified today.", "Find the files that were not modified today."),
    ("Does the function return a value?", "Doesn't the function return a value?"),
    ("Is the earth flat?", "Is the earth not flat?"),
    ("Write a Python loop that stops at 10.", "Write a Python loop that never stops at 10."),
]
OPERATORS = [
    ("What is 7 + 5?", "What is 7 - 5?"),
    ("What is 9 * 3?", "What is 9 / 3?"),
    ("Is 8 > 3?", "Is 8 < 3?"),
    ("Simplify (a + b) * c.", "Simplify a + b * c."),
    ("What is 2 ** 10 in Python?", "What is 2 * 10 in Python?"),
    ("What is 17 % 5?", "What is 17 / 5?"),
    ("Solve x + 4 = 10.", "Solve x - 4 = 10."),
    ("What does a >= b mean in C?", "What does a <= b mean in C?"),
    ("What is 6 plus 2?", "What is 6 minus 2?"),
    ("What is 20 divided by 4?", "What is 20 times 4?"),
    ("Explain what x != y does in JavaScript.", "Explain what x == y does in JavaScript."),
    ("Evaluate 3 * (4 + 5).", "Evaluate 3 * 4 + 5."),
    ("What is 100 - 37?", "What is 100 + 37?"),
    ("Is -5 less than 3?", "Is 5 less than 3?"),
    ("Compute 15 // 4 in Python.", "Compute 15 / 4 in Python."),
    ("What is 2^5?", "What is 2*5?"),
    ("Is 0.1 + 0.2 == 0.3 in Python?", "Is 0.1 + 0.2 != 0.3 in Python?"),
    ("What is 12 x 12?", "What is 12 + 12?"),
]
DIRECTION = [
    ("Convert Celsius to Fahrenheit.", "Convert Fahrenheit to Celsius."),
    ("Convert kilometers to miles.", "Convert miles to kilometers."),
    ("Convert pounds to kilograms.", "Convert kilograms to pounds."),
    ("Convert inches to centimeters.", "Convert centimeters to inches."),
    ("Convert hex to decimal.", "Convert decimal to hex."),
    ("Convert JSON to YAML in Python.", "Convert YAML to JSON in Python."),
    ("Convert a list to a tuple in Python.", "Convert a tuple to a list in Python."),
    ("Convert a string to an integer in Java.", "Convert an integer to a string in Java."),
    ("Convert UTC to Pacific time.", "Convert Pacific time to UTC."),
    ("Convert dollars to euros.", "Convert euros to dollars."),
    (
        "Translate this sentence from English to French: I like apples.",
        "Translate this sentence from French to English: I like apples.",
    ),
    ("Translate 'thank you' from German to Italian.", "Translate 'thank you' from Italian to German."),
    ("Port this script from Python to Rust.", "Port this script from Rust to Python."),
    ("How do I migrate from MySQL to PostgreSQL?", "How do I migrate from PostgreSQL to MySQL?"),
    ("How do I switch from Windows to Linux?", "How do I switch from Linux to Windows?"),
    ("Is a lion bigger than a tiger?", "Is a tiger bigger than a lion?"),
    ("Is Java faster than Python?", "Is Python faster than Java?"),
    ("Why is gold heavier than silver?", "Why is silver heavier than gold?"),
    ("Compare React vs Vue for a beginner.", "Compare Vue vs React for a beginner."),
    ("How far is it from London to Paris?", "How far is it from Paris to London?"),
    ("Give driving directions from Boston to New York.", "Give driving directions from New York to Boston."),
    (
        "Copy files from the server to my laptop with scp.",
        "Copy files from my laptop to the server with scp.",
    ),
    ("Map user ids to names in a dictionary.", "Map names to user ids in a dictionary."),
    ("Cast a float to an int in C.", "Cast an int to a float in C."),
    ("Send money from my checking account to savings.", "Send money from savings to my checking account."),
    ("Rewrite this loop from recursion into iteration.", "Rewrite this loop from iteration into recursion."),
    ("Convert RGB to HSV.", "Convert HSV to RGB."),
    ("Convert binary to octal.", "Convert octal to binary."),
    ("Is a kilobyte larger than a kibibyte?", "Is a kibibyte larger than a kilobyte?"),
    (
        "Change the date format from DD/MM/YYYY to MM/DD/YYYY.",
        "Change the date format from MM/DD/YYYY to DD/MM/YYYY.",
    ),
]
NAMES_TEMPLATES = [
    ("How do I read a CSV file in {x}?", ["Python", "R", "Julia", "Go", "Rust", "JavaScript"]),
    ("How do I sort an array in {x}?", ["JavaScript", "TypeScript", "Java", "Kotlin", "C++", "Ruby"]),
    ("How do I make an HTTP request in {x}?", ["Python", "Node.js", "Go", "Rust", "Java", "PHP"]),
    ("How do I create a DataFrame with {x}?", ["pandas", "polars", "Spark", "dask"]),
    ("How do I multiply two matrices with {x}?", ["numpy", "PyTorch", "TensorFlow", "JAX"]),
    ("How do I write a unit test with {x}?", ["pytest", "unittest", "JUnit", "Jest", "Mocha"]),
    ("How do I define a component in {x}?", ["React", "Vue", "Svelte", "Angular"]),
    ("How do I connect to a database with {x}?", ["SQLAlchemy", "Django", "Prisma", "Hibernate"]),
    ("Translate 'where is the station' into {x}.", ["French", "German", "Spanish", "Italian", "Portuguese"]),
    ("What is the capital of {x}?", ["Austria", "Australia", "Slovakia", "Slovenia", "Niger", "Nigeria"]),
    ("Write a hello world program in {x}.", ["C", "C#", "Java", "Go", "Haskell", "Scala"]),
    ("How do I handle errors in {x}?", ["Go", "Rust", "Python", "Swift", "Elixir"]),
    ("How do I deploy an app to {x}?", ["AWS", "Azure", "Heroku", "Kubernetes"]),
]
IDENTIFIERS = [
    ("What does os.path.join do?", "What does os.path.split do?"),
    ("What does json.loads do in Python?", "What does json.dumps do in Python?"),
    ("Explain the getUser function.", "Explain the getUsers function."),
    ("Why does parse_config raise a KeyError?", "Why does parse_conf raise a KeyError?"),
    ("What does list.append() do?", "What does list.extend() do?"),
    (
        "What is the difference between useEffect and useLayoutEffect?",
        "What is the difference between useEffect and useMemo?",
    ),
    ("Write a docstring for load_model(path).", "Write a docstring for save_model(path)."),
    ("What does str.strip() return?", "What does str.split() return?"),
    ("Explain Array.prototype.map in JavaScript.", "Explain Array.prototype.filter in JavaScript."),
    ("What does np.argmax return?", "What does np.argmin return?"),
    ("How do I call torch.no_grad correctly?", "How do I call torch.enable_grad correctly?"),
    ("What does the variable max_retries control?", "What does the variable max_retry control?"),
    ("Fix the bug in calculateTotal.", "Fix the bug in calculateTax."),
    ("What does re.match do?", "What does re.search do?"),
    ("Rename the function fetchData to loadData.", "Rename the function fetchData to getData."),
    ("What does dict.get() do?", "What does dict.pop() do?"),
    ("Explain asyncio.gather.", "Explain asyncio.wait."),
    ("What does Object.freeze do?", "What does Object.seal do?"),
    ("Write a test for user_service.create_user.", "Write a test for user_service.delete_user."),
    ("What does the flag --no-cache do in docker build?", "What does the flag --pull do in docker build?"),
    ("Print the value of HOME_DIR.", "Print the value of home_dir."),
    ("What is the type of self.items?", "What is the type of self.item?"),
    ("Explain what the isValid() method checks.", "Explain what the isVisible() method checks."),
    ("What does the SQL function COALESCE do?", "What does the SQL function NULLIF do?"),
    ('What does "git reset --hard" do?', 'What does "git reset --soft" do?'),
]
QUALIFIER_TEMPLATES = [
    "Explain {s} {a}.",
    "Write a short poem about {s} {a}.",
    "Tell me three interesting facts about {s} {a}.",
    "What are the main criticisms of {s} {a}?",
]
QUALIFIER_SUBJECTS = ["Python", "inflation", "black holes", "vaccines", "blockchains", "the immune system"]
ANGLES = [
    "for beginners",
    "in economics",
    "in the 19th century",
    "in everyday life",
    "in industry",
    "for experts",
]
SWAPS = [
    ("What is the largest country in Europe?", "What is the smallest country in Europe?"),
    ("Find the maximum of a list in Python.", "Find the minimum of a list in Python."),
    ("Remove the first element of an array.", "Remove the last element of an array."),
    ("Are all birds able to fly?", "Are some birds able to fly?"),
    ("Sort the list in ascending order.", "Sort the list in descending order."),
    ("When did World War II start?", "When did World War II end?"),
    ("What is the warmest month in Sydney?", "What is the coldest month in Sydney?"),
    ("How do I encrypt a file with gpg?", "How do I decrypt a file with gpg?"),
    ("How do I enable the firewall on Ubuntu?", "How do I disable the firewall on Ubuntu?"),
    ("How do I compress a folder on Linux?", "How do I extract a folder on Linux?"),
    ("What are the advantages of remote work?", "What are the disadvantages of remote work?"),
    ("How do I add a user in Linux?", "How do I remove a user in Linux?"),
    ("How do I increase the font size in VS Code?", "How do I decrease the font size in VS Code?"),
    ("What are the pros of nuclear energy?", "What are the cons of nuclear energy?"),
    (
        "Who was the first president of the United States?",
        "Who was the second president of the United States?",
    ),
]

# Written after the rules above were tuned, as a check on unseen pairs: 45 pairs, one wrong answer found
# ("ounces in a pound" vs "pounds in an ounce", cosine 0.956), which added the relation-word rule.
LATER_SAME = [
    (
        "How do I list files in a directory with Python?",
        "How can I list the files in a directory using Python?",
    ),
    (
        "What is the freezing point of water in Fahrenheit?",
        "In Fahrenheit, what is the freezing point of water?",
    ),
    ("Give me a packing list for a weekend camping trip.", "What should I pack for a weekend camping trip?"),
    (
        "Explain the difference between a list and a tuple in Python.",
        "What's the difference between a list and a tuple in Python?",
    ),
    ("How do I check my Node.js version?", "How can I check which version of Node.js I have?"),
    ("Write a limerick about a cat.", "Compose a limerick about a cat."),
    ("What is the GDP of Germany?", "What's Germany's GDP?"),
    ("How do I remove duplicates from a list in Python?", "How can I remove duplicates from a Python list?"),
    ("Who painted the Mona Lisa?", "Who is the painter of the Mona Lisa?"),
    ("Describe the plot of Hamlet.", "Explain the plot of Hamlet."),
    ("What are good exercises for lower back pain?", "Which exercises are good for lower back pain?"),
    ("How do I create a virtual environment in Python?", "How can I create a Python virtual environment?"),
    ("Tell me a fun fact about octopuses.", "Give me a fun fact about octopuses."),
    ("What is the chemical formula of table salt?", "What's the chemical formula for table salt?"),
    ("How long should I boil an egg?", "How long do I boil an egg for?"),
    ("Summarize the causes of World War I.", "Give a summary of the causes of World War I."),
    ("What is Docker used for?", "What is Docker used for?  "),
    ("how do i exit vim", "How do I exit Vim?"),
    ("What does HTTP status 404 mean?", "What does the HTTP status 404 mean?"),
    ("Recommend a good book on machine learning.", "Suggest a good book on machine learning."),
]
LATER_DIFF = [
    ("How do I list files in a directory with Python?", "How do I delete files in a directory with Python?"),
    ("What is the freezing point of water in Fahrenheit?", "What is the freezing point of water in Celsius?"),
    ("What is 15% of 80?", "What is 15% of 90?"),
    (
        "Explain the difference between a list and a tuple in Python.",
        "Explain the difference between a list and a set in Python.",
    ),
    ("How do I upgrade Node.js on Mac?", "How do I downgrade Node.js on Mac?"),
    ("Write a limerick about a cat.", "Write a limerick about a dog."),
    ("What is the GDP of Germany?", "What is the GDP of Japan?"),
    ("How do I remove duplicates from a list in Python?", "How do I keep duplicates in a list in Python?"),
    ("Who painted the Mona Lisa?", "Who stole the Mona Lisa?"),
    ("Is it safe to drink tap water in Mexico?", "Is it unsafe to drink tap water in Mexico?"),
    ("Should I use tabs or spaces in Python?", "Should I not use tabs or spaces in Python?"),
    ("Convert 5 feet to meters.", "Convert 5 meters to feet."),
    ("What is 3 squared?", "What is 3 cubed?"),
    ("How do I sort a dict by value in Python?", "How do I sort a dict by key in Python?"),
    ("What does `git pull` do?", "What does `git push` do?"),
    ("What does HTTP status 404 mean?", "What does HTTP status 403 mean?"),
    ("How many ounces are in a pound?", "How many pounds are in an ounce?"),
    ("Write a Python function is_prime(n).", "Write a Python function is_even(n)."),
    ("What time zone is New York in?", "What time zone is Los Angeles in?"),
    ("Is Mercury closer to the sun than Venus?", "Is Venus closer to the sun than Mercury?"),
    ("Translate 'cat' from English to Japanese.", "Translate 'cat' from Japanese to English."),
    ("What is the integral of x^2?", "What is the derivative of x^2?"),
    ("How do I make my code run faster?", "How do I make my code run slower?"),
    ("Why can't I connect to Wi-Fi?", "Why can I connect to Wi-Fi?"),
    ("What is the sum of the first 100 integers?", "What is the sum of the first 1000 integers?"),
]


def build() -> list[dict[str, object]]:
    rng = random.Random(7)
    rows: list[dict[str, object]] = []

    def add(a: str, b: str, same: bool, kind: str) -> None:
        rows.append({"a": a, "b": b, "same": same, "kind": kind})

    for base, paras in PARAPHRASES:
        for p in paras:
            add(base, p, True, "paraphrase")
        for v in surface_variants(base):
            add(base, v, True, "surface")
    for a, b in number_edits(rng) + unicode_edits():
        add(a, b, False, "numbers")
    for a, b in NEGATION:
        add(a, b, False, "negation")
    for a, b in OPERATORS:
        add(a, b, False, "operators")
    for a, b in DIRECTION:
        add(a, b, False, "direction")
    for t, names in NAMES_TEMPLATES:
        for i, x in enumerate(names):
            add(t.format(x=x), t.format(x=names[(i + 1) % len(names)]), False, "names")
    for a, b in IDENTIFIERS:
        add(a, b, False, "identifiers")
    for t in QUALIFIER_TEMPLATES:
        for s in QUALIFIER_SUBJECTS:
            a1, a2 = rng.sample(ANGLES, 2)
            add(t.format(s=s, a=a1), t.format(s=s, a=a2), False, "qualifier")
    for a, b in SWAPS:
        add(a, b, False, "antonym")
    for a, b in LATER_SAME:
        add(a, b, True, "paraphrase-later")
    for a, b in LATER_DIFF:
        add(a, b, False, "mixed-later")
    return rows


def main() -> None:
    rows = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    same = sum(1 for r in rows if r["same"])
    print(f"wrote {OUT}: {len(rows)} pairs ({same} paraphrases, {len(rows) - same} answer-changing edits)")


if __name__ == "__main__":
    main()
