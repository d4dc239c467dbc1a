"""The product vocabulary of the simulator: a 3-level taxonomy with real product words.

Each leaf category lists its product nouns (with synonyms a shopper may type instead), an
attribute family (colours, materials, styles, sizes that make sense for it), the brands of its
mid-level category and a typical price. Titles, descriptions and queries are all built from these
words, so a query and the items it is about share vocabulary: that is the signal a text encoder
(and the CQ-SID query-item alignment) can learn from. Brands are invented names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttributeFamily:
    """Attribute words that fit one kind of product."""

    colours: tuple[str, ...]
    materials: tuple[str, ...]
    styles: tuple[str, ...]
    sizes: tuple[str, ...]


@dataclass(frozen=True)
class Leaf:
    """One leaf category.

    Args:
        path: ``(top, mid, leaf)`` names, root first.
        nouns: one tuple per product noun: ``(canonical, synonym, ...)``; titles use the canonical
            word, queries any of them.
        family: name of the :data:`ATTRIBUTE_FAMILIES` entry for this leaf.
        price: median price (USD) of the leaf; item prices are lognormal around it.
    """

    path: tuple[str, str, str]
    nouns: tuple[tuple[str, ...], ...]
    family: str
    price: float

    @property
    def key(self) -> str:
        """The path joined with ``" > "`` (the form of ``requests.gt_category``)."""
        return " > ".join(self.path)


_BASIC = ("black", "white", "grey", "navy", "red", "blue", "green", "beige", "pink", "brown")

ATTRIBUTE_FAMILIES: dict[str, AttributeFamily] = {
    "gadget": AttributeFamily(
        ("black", "white", "silver", "grey", "blue", "red", "rose gold", "green"),
        ("aluminium", "plastic", "metal", "silicone", "carbon fibre", "glass"),
        ("wireless", "compact", "portable", "ergonomic", "waterproof", "foldable", "rgb", "slim"),
        ("mini", "standard", "xl", "pro"),
    ),
    "apparel": AttributeFamily(
        ("black", "white", "navy", "grey", "beige", "red", "olive", "pink", "burgundy", "blue"),
        ("cotton", "linen", "wool", "polyester", "denim", "silk", "fleece", "cashmere"),
        ("casual", "slim fit", "oversized", "vintage", "classic", "floral", "striped", "relaxed fit"),
        ("xs", "s", "m", "l", "xl", "xxl"),
    ),
    "footwear": AttributeFamily(
        ("black", "white", "grey", "navy", "brown", "tan", "red", "olive"),
        ("leather", "suede", "mesh", "canvas", "rubber", "knit"),
        ("lightweight", "waterproof", "cushioned", "breathable", "retro", "slip on", "non slip"),
        ("size 6", "size 7", "size 8", "size 9", "size 10", "size 11", "size 12"),
    ),
    "cookware": AttributeFamily(
        ("black", "silver", "red", "copper", "grey", "cream", "green"),
        ("stainless steel", "cast iron", "ceramic", "aluminium", "glass", "bamboo", "carbon steel"),
        ("non stick", "induction", "dishwasher safe", "professional", "classic", "insulated"),
        ("small", "medium", "large", "family size"),
    ),
    "textile": AttributeFamily(
        ("white", "grey", "navy", "beige", "sage green", "blush pink", "charcoal", "ivory"),
        ("cotton", "linen", "microfiber", "bamboo", "flannel", "velvet", "silk", "sherpa"),
        ("striped", "plain", "quilted", "floral", "geometric", "cooling", "hypoallergenic"),
        ("single", "double", "queen", "king"),
    ),
    "decor": AttributeFamily(
        ("white", "black", "gold", "natural", "green", "terracotta", "grey", "blue"),
        ("ceramic", "glass", "wood", "rattan", "metal", "jute", "marble", "cotton"),
        ("modern", "rustic", "minimalist", "scandinavian", "boho", "vintage", "industrial"),
        ("small", "medium", "large"),
    ),
    "cosmetics": AttributeFamily(
        ("nude", "coral", "ruby", "rose", "berry", "ivory", "beige", "plum"),
        ("hyaluronic acid", "vitamin c", "aloe vera", "argan oil", "shea butter", "retinol", "niacinamide"),
        ("matte", "glossy", "long lasting", "waterproof", "oil free", "fragrance free", "organic", "vegan"),
        ("30ml", "50ml", "100ml", "200ml"),
    ),
    "fitness": AttributeFamily(
        ("black", "blue", "purple", "grey", "green", "orange", "pink", "red"),
        ("neoprene", "rubber", "tpe", "nylon", "cast iron", "foam", "cork", "polyester"),
        ("non slip", "adjustable", "lightweight", "heavy duty", "ultralight", "waterproof", "foldable"),
        ("small", "medium", "large", "2 person", "4 person"),
    ),
    "stationery": AttributeFamily(
        ("black", "blue", "red", "green", "pink", "white", "brown", "gold"),
        ("paper", "leather", "metal", "plastic", "bamboo", "recycled"),
        ("refillable", "hardcover", "dotted", "lined", "retractable", "fine point", "spiral"),
        ("a4", "a5", "a6", "pocket"),
    ),
    "furniture": AttributeFamily(
        ("black", "white", "grey", "walnut", "oak", "blue", "beige"),
        ("mesh", "leather", "solid wood", "steel", "fabric", "bamboo"),
        ("ergonomic", "adjustable", "modern", "executive", "minimalist", "height adjustable", "reclining"),
        ("compact", "standard", "large", "extra wide"),
    ),
    "toys": AttributeFamily(
        ("red", "blue", "yellow", "green", "pink", "purple", "multicolour", "brown"),
        ("wooden", "plastic", "plush", "cardboard", "foam", "metal"),
        ("educational", "classic", "magnetic", "glow in the dark", "interactive", "rechargeable"),
        ("ages 3+", "ages 6+", "ages 8+", "ages 12+"),
    ),
    "pet": AttributeFamily(
        ("black", "grey", "brown", "beige", "blue", "red", "pink", "green"),
        ("nylon", "plush", "rope", "sisal", "leather", "rubber", "memory foam"),
        ("washable", "orthopedic", "durable", "reflective", "adjustable", "calming", "waterproof"),
        ("small", "medium", "large", "xl"),
    ),
}

# mid-level category -> brands selling in it (invented names).
BRANDS: dict[str, tuple[str, ...]] = {
    "Audio": ("Sonora", "Auralis", "Bassline", "Echovox", "Tunewave", "Klangwerk", "Nordik Audio"),
    "Computer Accessories": ("Keyforge", "Logiline", "Pixelon", "Clickwise", "Viewmax", "Typecraft"),
    "Phone Accessories": ("Voltix", "Chargemate", "Shieldo", "Caseology Co", "Powerhive", "Ampere Lab"),
    "Kitchen": ("Cuisinova", "Ironhearth", "Brewmaster", "Kitchenly", "Blade & Co", "Morningcup", "Panworks"),
    "Bedding": ("Dreamweave", "Slumberly", "Cotton Cloud", "Nestique", "Linenhaus"),
    "Home Decor": ("Lumiere Home", "Hearthstone", "Casa Verde", "Nordlys", "Wickhaven", "Urban Loft"),
    "Women's Clothing": ("Maison Elle", "Bloomthread", "Vera Lane", "Northwind", "Solstice", "Juniper & Co"),
    "Men's Clothing": ("Harbor & Pike", "Gentry", "Stonefield", "Redwood Denim", "Northwind", "Oakmont"),
    "Shoes": ("Stridewell", "Trailpeak", "Urbanstep", "Puddlejump", "Fleetfoot", "Cobbleworks"),
    "Fashion Accessories": ("Carryall", "Maison Elle", "Tickwell", "Capsmith", "Satchel & Sons", "Horizon"),
    "Skin Care": ("Dermaluxe", "Purebloom", "Glowlab", "Aquaveil", "Botanica", "Sunshield"),
    "Makeup": ("Velvet Muse", "Glowlab", "Chroma", "Lashique", "Rougeline", "Purebloom"),
    "Hair Care": ("Silkara", "Ionix", "Maneworks", "Curlcraft", "Botanica"),
    "Fragrance": ("Maison Oud", "Fleur de Nuit", "Ambrette", "Cedar & Sage", "Noir Atelier"),
    "Fitness": ("Ironclad", "Flexcore", "Zenflow", "Pulsefit", "Liftline", "Motiva"),
    "Camping": ("Trailpeak", "Basecamp", "Summitline", "Emberlight", "Wildroam", "Northstar Outdoor"),
    "Cycling": ("Spokeworks", "Velocita", "Pedalpro", "Roadguard", "Chainline"),
    "Team Sports": ("Goalline", "Hoopstar", "Kickfield", "Spikezone", "Pitchside"),
    "Writing Supplies": ("Inkwell", "Penmark", "Quillson", "Paperlane", "Scriptor", "Noteable"),
    "Office Furniture": ("Ergoform", "Deskline", "Sitwell", "Workhaus", "Postura"),
    "Desk Supplies": ("Deskmate", "Tidyline", "Filewise", "Clipco", "Organix"),
    "Building Toys": ("Brickverse", "Buildables", "Magnatile Co", "Blockcraft", "Tinkerbox"),
    "Games & Puzzles": ("Puzzlecraft", "Gamenight", "Meeple & Co", "Brainteaze", "Tabletop Tales"),
    "Dolls & Plush": ("Cuddlebug", "Snuggletown", "Dollhaven", "Fluffkin", "Teddy & Co"),
    "Remote Control": ("Zoomrc", "Skyhopper", "Turbotrack", "Aerowing", "Rallyrc"),
    "Dog Supplies": ("Pawsome", "Barkley", "Woofgear", "Houndhaven", "Fetchit", "Tailwag"),
    "Cat Supplies": ("Whiskerly", "Purrfect", "Catnapper", "Meowtown", "Kittyland"),
}


def _leaf(top: str, mid: str, leaf: str, family: str, price: float, nouns: str) -> Leaf:
    # nouns: "canonical|synonym|synonym; canonical|synonym" (compact to keep the table readable)
    groups = tuple(tuple(w.strip() for w in g.split("|")) for g in nouns.split(";"))
    return Leaf((top, mid, leaf), groups, family, price)


# fmt: off
LEAVES: tuple[Leaf, ...] = (
    _leaf("Electronics", "Audio", "Headphones", "gadget", 80, "headphones|headset|over ear headphones; earbuds|earphones|in ear headphones; noise cancelling headphones|anc headphones"),
    _leaf("Electronics", "Audio", "Speakers", "gadget", 60, "bluetooth speaker|wireless speaker|portable speaker; soundbar|sound bar|tv speaker; smart speaker|voice assistant speaker"),
    _leaf("Electronics", "Audio", "Microphones", "gadget", 70, "microphone|mic; usb microphone|podcast microphone|streaming mic; lavalier microphone|lapel mic|clip mic"),
    _leaf("Electronics", "Computer Accessories", "Keyboards", "gadget", 55, "mechanical keyboard|gaming keyboard; wireless keyboard|bluetooth keyboard|cordless keyboard"),
    _leaf("Electronics", "Computer Accessories", "Mice", "gadget", 30, "mouse|computer mouse; gaming mouse; trackball|trackball mouse; vertical mouse|ergonomic mouse"),
    _leaf("Electronics", "Computer Accessories", "Monitors", "gadget", 220, "monitor|display|computer screen; gaming monitor|144hz monitor; portable monitor|travel display"),
    _leaf("Electronics", "Computer Accessories", "Laptop Bags", "gadget", 40, "laptop bag|laptop case|notebook bag; laptop sleeve|laptop cover"),
    _leaf("Electronics", "Phone Accessories", "Phone Cases", "gadget", 18, "phone case|phone cover|mobile case; wallet case|flip case; rugged case|shockproof case"),
    _leaf("Electronics", "Phone Accessories", "Chargers", "gadget", 25, "charger|wall charger|usb charger|fast charger; power bank|portable charger|battery pack; charging cable|usb cable|usb c cable"),
    _leaf("Electronics", "Phone Accessories", "Screen Protectors", "gadget", 12, "screen protector|screen guard; privacy screen protector|anti spy screen"),
    _leaf("Home & Kitchen", "Kitchen", "Cookware", "cookware", 55, "frying pan|skillet|fry pan; saucepan|cooking pot|pot; wok|stir fry pan; dutch oven|casserole dish"),
    _leaf("Home & Kitchen", "Kitchen", "Kitchen Knives", "cookware", 45, "chef knife|kitchen knife|cooks knife; knife set|knife block; paring knife|vegetable knife"),
    _leaf("Home & Kitchen", "Kitchen", "Coffee & Tea", "cookware", 50, "coffee maker|coffee machine; french press|cafetiere; electric kettle|kettle|water boiler; teapot|tea pot"),
    _leaf("Home & Kitchen", "Kitchen", "Drinkware", "cookware", 20, "mug|coffee mug|cup; water bottle|drinking bottle; tumbler|travel mug|insulated cup"),
    _leaf("Home & Kitchen", "Bedding", "Sheets", "textile", 45, "sheet set|bed sheets|bedsheets; fitted sheet|fitted bed sheet"),
    _leaf("Home & Kitchen", "Bedding", "Pillows", "textile", 30, "pillow|bed pillow; pillowcase|pillow cover|pillow slip; body pillow|long pillow"),
    _leaf("Home & Kitchen", "Bedding", "Blankets & Duvets", "textile", 60, "blanket|throw|throw blanket; duvet|comforter|quilt; weighted blanket|heavy blanket"),
    _leaf("Home & Kitchen", "Home Decor", "Lamps", "decor", 45, "table lamp|bedside lamp; desk lamp|reading lamp|study lamp; floor lamp|standing lamp; night light|nightlight"),
    _leaf("Home & Kitchen", "Home Decor", "Candles", "decor", 18, "scented candle|candle|aroma candle; candle holder|candlestick; tealight|tea light candles"),
    _leaf("Home & Kitchen", "Home Decor", "Rugs", "decor", 70, "area rug|rug|carpet; doormat|door mat|entrance mat; runner rug|hallway runner"),
    _leaf("Home & Kitchen", "Home Decor", "Vases & Planters", "decor", 25, "vase|flower vase; planter|plant pot|flower pot; hanging planter|hanging basket"),
    _leaf("Clothing", "Women's Clothing", "Dresses", "apparel", 45, "dress|frock; maxi dress|long dress; cocktail dress|party dress|evening dress; sundress|summer dress"),
    _leaf("Clothing", "Women's Clothing", "Tops & Blouses", "apparel", 25, "blouse|womens top; t shirt|tee|tshirt; tank top|cami|camisole"),
    _leaf("Clothing", "Women's Clothing", "Women's Coats", "apparel", 90, "coat|womens coat; puffer jacket|down jacket|padded jacket; trench coat|mac|raincoat"),
    _leaf("Clothing", "Men's Clothing", "Shirts", "apparel", 35, "shirt|dress shirt|button down shirt; polo shirt|polo; flannel shirt|check shirt"),
    _leaf("Clothing", "Men's Clothing", "Trousers & Jeans", "apparel", 45, "jeans|denim jeans; trousers|pants|slacks; chinos|chino pants; joggers|sweatpants|track pants"),
    _leaf("Clothing", "Men's Clothing", "Men's Jackets", "apparel", 80, "jacket|mens jacket; blazer|sport coat|suit jacket; hoodie|hooded sweatshirt|sweatshirt"),
    _leaf("Clothing", "Shoes", "Running Shoes", "footwear", 85, "running shoes|runners|running trainers; trail running shoes|trail shoes; sneakers|trainers"),
    _leaf("Clothing", "Shoes", "Boots", "footwear", 95, "boots|ankle boots|chelsea boots; hiking boots|walking boots|trekking boots; rain boots|wellies|wellington boots"),
    _leaf("Clothing", "Shoes", "Sandals & Slippers", "footwear", 30, "sandals|slides; flip flops|thongs; slippers|house shoes"),
    _leaf("Clothing", "Fashion Accessories", "Bags", "apparel", 55, "handbag|purse; tote bag|tote|shopper bag; backpack|rucksack|daypack; crossbody bag|shoulder bag|sling bag"),
    _leaf("Clothing", "Fashion Accessories", "Hats & Scarves", "apparel", 22, "beanie|knit hat|winter hat; baseball cap|cap; scarf|shawl|wrap; sun hat|bucket hat"),
    _leaf("Clothing", "Fashion Accessories", "Watches", "gadget", 120, "watch|wristwatch; smartwatch|smart watch; fitness tracker|activity tracker|fitness band"),
    _leaf("Beauty", "Skin Care", "Moisturizers", "cosmetics", 28, "moisturizer|face cream|moisturising cream; night cream|overnight cream; eye cream|under eye cream"),
    _leaf("Beauty", "Skin Care", "Cleansers", "cosmetics", 16, "face wash|facial cleanser|cleanser; micellar water|makeup remover; exfoliator|face scrub"),
    _leaf("Beauty", "Skin Care", "Sunscreen", "cosmetics", 18, "sunscreen|sunblock|sun cream|spf lotion; after sun|after sun lotion"),
    _leaf("Beauty", "Skin Care", "Serums", "cosmetics", 32, "serum|face serum; face oil|facial oil; toner|face toner"),
    _leaf("Beauty", "Makeup", "Lip Makeup", "cosmetics", 17, "lipstick|lip colour|lip color; lip gloss|lipgloss; lip liner|lip pencil"),
    _leaf("Beauty", "Makeup", "Face Makeup", "cosmetics", 26, "foundation|liquid foundation; concealer|cover up; blush|blusher; setting powder|face powder"),
    _leaf("Beauty", "Makeup", "Eye Makeup", "cosmetics", 16, "mascara|lash mascara; eyeliner|eye liner|liquid liner; eyeshadow palette|eye shadow|shadow palette"),
    _leaf("Beauty", "Hair Care", "Shampoo & Conditioner", "cosmetics", 14, "shampoo|hair wash; conditioner|hair conditioner; hair mask|deep conditioner"),
    _leaf("Beauty", "Hair Care", "Hair Styling Tools", "gadget", 60, "hair dryer|hairdryer|blow dryer; hair straightener|flat iron|straightening iron; curling iron|curling wand|curler"),
    _leaf("Beauty", "Fragrance", "Perfume", "cosmetics", 65, "perfume|eau de parfum|fragrance; cologne|eau de toilette|aftershave; body mist|body spray"),
    _leaf("Sports & Outdoors", "Fitness", "Yoga", "fitness", 28, "yoga mat|exercise mat|workout mat; yoga block|yoga brick; yoga strap|stretching strap"),
    _leaf("Sports & Outdoors", "Fitness", "Weights", "fitness", 55, "dumbbells|dumbbell set|hand weights; kettlebell|kettle bell; resistance bands|exercise bands|workout bands"),
    _leaf("Sports & Outdoors", "Fitness", "Cardio Equipment", "fitness", 180, "exercise bike|stationary bike|spin bike; treadmill|running machine; jump rope|skipping rope"),
    _leaf("Sports & Outdoors", "Camping", "Tents", "fitness", 140, "tent|camping tent; backpacking tent|hiking tent|lightweight tent; pop up tent|instant tent"),
    _leaf("Sports & Outdoors", "Camping", "Sleeping Gear", "fitness", 70, "sleeping bag|mummy bag; sleeping pad|camping mat|sleeping mat; camping pillow|travel pillow"),
    _leaf("Sports & Outdoors", "Camping", "Camping Lights", "fitness", 25, "headlamp|head torch|head light; lantern|camping lantern; flashlight|torch|led torch"),
    _leaf("Sports & Outdoors", "Cycling", "Bike Accessories", "fitness", 35, "bike light|bicycle light; bike lock|bicycle lock|u lock; bike helmet|cycling helmet; bike pump|bicycle pump"),
    _leaf("Sports & Outdoors", "Team Sports", "Balls", "fitness", 25, "football|soccer ball; basketball|hoop ball; volleyball|beach volleyball"),
    _leaf("Office Products", "Writing Supplies", "Pens", "stationery", 12, "ballpoint pen|pen|biro; gel pen|gel ink pen; fountain pen|ink pen; highlighter|marker pen"),
    _leaf("Office Products", "Writing Supplies", "Notebooks", "stationery", 14, "notebook|notepad|exercise book; journal|diary; planner|agenda|organiser"),
    _leaf("Office Products", "Office Furniture", "Office Chairs", "furniture", 190, "office chair|desk chair|computer chair; gaming chair|gamer chair; kneeling chair|ergonomic stool"),
    _leaf("Office Products", "Office Furniture", "Desks", "furniture", 240, "desk|office desk|computer desk; standing desk|sit stand desk|height adjustable desk; writing desk|study table"),
    _leaf("Office Products", "Desk Supplies", "Desk Organizers", "stationery", 20, "desk organizer|desk tidy|pen holder; file folder|document folder|binder; stapler|desk stapler"),
    _leaf("Toys & Games", "Building Toys", "Building Sets", "toys", 40, "building blocks|building bricks|construction set; magnetic tiles|magnet blocks; marble run|marble track"),
    _leaf("Toys & Games", "Games & Puzzles", "Puzzles", "toys", 18, "jigsaw puzzle|puzzle|jigsaw; 3d puzzle|three dimensional puzzle; brain teaser|puzzle cube"),
    _leaf("Toys & Games", "Games & Puzzles", "Board Games", "toys", 30, "board game|family game; card game|playing cards; strategy game|tabletop game"),
    _leaf("Toys & Games", "Dolls & Plush", "Plush Toys", "toys", 20, "plush toy|stuffed animal|soft toy; teddy bear|teddy; plush pillow|cuddle pillow"),
    _leaf("Toys & Games", "Dolls & Plush", "Dolls", "toys", 30, "doll|fashion doll|baby doll; dollhouse|doll house; doll clothes|doll outfit"),
    _leaf("Toys & Games", "Remote Control", "RC Vehicles", "toys", 60, "remote control car|rc car|rc truck; drone|quadcopter|mini drone; rc helicopter|remote helicopter"),
    _leaf("Pet Supplies", "Dog Supplies", "Dog Beds", "pet", 50, "dog bed|pet bed|dog cushion; dog crate|dog kennel|dog cage; dog blanket|pet blanket"),
    _leaf("Pet Supplies", "Dog Supplies", "Dog Toys", "pet", 12, "dog toy|chew toy; rope toy|tug toy; squeaky toy|squeaker toy; dog ball|fetch ball"),
    _leaf("Pet Supplies", "Dog Supplies", "Leashes & Collars", "pet", 18, "dog leash|lead|dog lead; dog collar|collar; dog harness|no pull harness"),
    _leaf("Pet Supplies", "Cat Supplies", "Cat Furniture", "pet", 65, "cat tree|cat tower|cat condo; scratching post|cat scratcher; cat bed|kitten bed"),
    _leaf("Pet Supplies", "Cat Supplies", "Cat Litter", "pet", 22, "cat litter|kitty litter; litter box|litter tray; litter mat|litter scoop"),
)
# fmt: on

# Words a shopper adds to a query that say nothing about the product (noise), and price words that
# say something about the shopper's price tier (index 0 = budget, 2 = premium).
FILLER_WORDS = ("best", "new", "for men", "for women", "for kids", "gift", "sale", "2024", "top rated", "set")
PRICE_WORDS = (
    ("cheap", "budget", "affordable", "under 20"),
    (),
    ("premium", "luxury", "high end", "designer"),
)


def check_vocabulary() -> None:
    """Checks that every leaf names a known attribute family and a mid category with brands.

    Raises:
        ValueError: the vocabulary is inconsistent (a leaf's family or brands are missing, or two
            leaves share a path).
    """
    seen = set()
    for leaf in LEAVES:
        if leaf.family not in ATTRIBUTE_FAMILIES:
            raise ValueError(f"leaf {leaf.key}: unknown attribute family '{leaf.family}'")
        if leaf.path[1] not in BRANDS:
            raise ValueError(f"leaf {leaf.key}: no brands for mid category '{leaf.path[1]}'")
        if leaf.key in seen:
            raise ValueError(f"leaf {leaf.key} is listed twice")
        seen.add(leaf.key)
