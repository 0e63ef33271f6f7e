"""Regenerate cmedbert/demo_data from the hand-written knowledge base in kb.py.

    python cmedbert/demo_data/tools/make_demo_data.py

Deterministic (fixed seed). Every text here was written for this project. The script checks
its own output: CMeEE offsets are exact (end_idx inclusive), CBLUE dev/test texts do not occur
in the medical corpus except the planted ones listed in PLANTED (so decontamination has work).
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the shipped package data
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kb import (BODY_PARTS, DEPARTMENTS, DISEASES, EQUIPMENT, EXTRA_CHECKS, EXTRA_DISEASES,  # noqa: E402
                EXTRA_DRUGS, EXTRA_SYMPTOMS, LAB_ITEMS, MICROBES, PROCEDURES, SIDE_EFFECTS)

ROOT = Path(__file__).resolve().parent.parent
rng = random.Random(20261121)

D = [dict(zip(["name", "dept", "body", "syms", "drugs", "checks", "comps", "cause", "caution", "lab"], row))
     for row in DISEASES]

WHO = ["我", "我爸", "我妈", "我爷爷", "我奶奶", "我老公", "我老婆", "我女儿", "我儿子", "我姐姐"]
AGE = {"我": ["今年32岁", "今年45岁", "今年28岁", "今年51岁"], "我爸": ["今年63岁", "今年58岁"],
       "我妈": ["今年60岁", "今年55岁"], "我爷爷": ["今年78岁", "今年81岁"], "我奶奶": ["今年76岁", "今年72岁"],
       "我老公": ["今年38岁", "今年42岁"], "我老婆": ["今年35岁", "今年29岁"], "我女儿": ["今年6岁", "今年3岁"],
       "我儿子": ["今年5岁", "今年2岁"], "我姐姐": ["今年40岁", "今年36岁"]}
ACUTE = {"急性阑尾炎", "上呼吸道感染", "社区获得性肺炎", "手足口病", "小儿腹泻", "小儿肺炎", "热性惊厥",
         "荨麻疹", "带状疱疹", "尿路感染", "细菌性阴道病"}
KIDS = ["孩子", "宝宝", "我家小孩"]
KID_AGE = ["1岁半", "2岁", "3岁", "10个月", "4岁", "6岁"]
DUR = ["最近一周", "这半个月", "近两个月", "三天前开始", "大概有半年了", "前天晚上开始"]
EXTRA = ["晚上睡不好", "工作压力比较大", "平时不怎么运动", "有十几年烟龄", "家里没人有这个病", "吃饭也没什么胃口"]
OPEN = ["你好，", "您好，", "医生你好，", "", "医生您好，"]
CLOSE = ["谢谢医生。", "麻烦帮忙看一下。", "很着急，谢谢！", "", "请问该怎么办？"]


def who_for(d: dict) -> tuple[str, str]:
    if d["dept"] == "儿科":
        return rng.choice(KIDS), rng.choice(KID_AGE)
    if d["dept"] == "妇产科":
        w = rng.choice(["我", "我老婆", "我姐姐"])
    else:
        w = rng.choice(WHO[:7])
    return w, rng.choice(AGE[w])


def dialogue_rows() -> list[dict]:
    rows = []
    for d in D:
        s = d["syms"]
        drug, dose = d["drugs"][0]
        chk = "和".join(d["checks"][:2])
        # 1. symptoms -> what is it
        w, age = who_for(d)
        s1, s2 = rng.sample(s, 2)
        rows.append({
            "department": d["dept"],
            "title": f"{s1}{s2}是怎么回事？",
            "ask": f"{rng.choice(OPEN)}{w}{age}，{rng.choice(DUR)}出现{s1}、{s2}，{rng.choice(EXTRA)}。"
                   f"上网查了一下担心是{d['name']}，需要做什么检查？{rng.choice(CLOSE)}",
            "answer": f"你好，根据描述的{s1}、{s2}，需要考虑{d['name']}的可能，但不能只凭症状确定。"
                      f"建议到{d['dept']}就诊，先查{chk}明确诊断。如果确诊，可以在医生指导下使用{drug}，"
                      f"一般{dose}。平时{d['caution']}。",
        })
        # 2. on treatment, lab value -> adjust?
        w, age = who_for(d)
        lab = f"复查{d['lab']}" if d["lab"] else f"{s[0]}还是反反复复"
        rows.append({
            "department": d["dept"],
            "title": f"{d['name']}吃{drug}效果不好怎么办？",
            "ask": f"{rng.choice(OPEN)}{w}{age}，确诊{d['name']}{rng.choice(['一年多', '三个月', '两年', '半年'])}了，"
                   f"一直在吃{drug}，{dose}。最近{lab}，需要换药或者加药吗？{rng.choice(CLOSE)}",
            "answer": f"你好，{d['name']}的治疗要看整体情况。从{lab.split('，')[0].removeprefix('复查')}来看，目前控制还不够理想。"
                      + (f"可以考虑在{drug}的基础上联合{d['drugs'][1][0]}（{d['drugs'][1][1]}），" if len(d["drugs"]) > 1
                         else f"先确认{drug}是否按时足量服用，")
                      + f"具体剂量请复诊时由{d['dept']}医生调整，不要自行加减。{d['caution']}。",
        })
        # 3. cause / complications
        w, age = who_for(d)
        comp = "、".join(d["comps"])
        rows.append({
            "department": d["dept"],
            "title": f"{d['name']}是什么原因引起的，会有什么危害？",
            "ask": f"{rng.choice(OPEN)}{w}{age}，{'前几天被诊断为' if d['name'] in ACUTE else '前段时间体检发现'}{d['name']}，平时{rng.choice(EXTRA)}。"
                   f"想问问这个病是怎么得的？不管它的话会不会加重？{rng.choice(CLOSE)}",
            "answer": f"{d['name']}主要与{d['cause']}有关。长期控制不好可能出现{comp}等并发症，"
                      f"所以需要规范治疗并定期复查{d['checks'][0]}。{d['caution']}。",
        })
    rng.shuffle(rows)
    return rows[:132]


# rows written by hand: identifiers the corpus stage must scrub, a multi-line answer, extra voices
HAND_ROWS = [
    {"department": "内分泌科", "title": "糖化血红蛋白6.5%算糖尿病吗？",
     "ask": "医生你好，我妈今年56岁，体检空腹血糖7.1mmol/L，糖化血红蛋白HbA1c 6.5%，她平时爱吃甜食。"
            "医生说可能是2型糖尿病，我想约您的门诊，我的电话是13812345678，方便的话回个电话，谢谢。",
     "answer": "你好，空腹血糖≥7.0mmol/L且HbA1c≥6.5%，已经达到2型糖尿病的诊断标准，建议再复查一次确认。"
               "初始治疗一般首选二甲双胍0.5g每日2次随餐服用，同时控制饮食、规律运动，3个月后复查糖化血红蛋白。"
               "门诊预约请通过医院公众号，不要在网上留电话号码。"},
    {"department": "儿科", "title": "孩子发烧39度吃什么退烧药？",
     "ask": "宝宝2岁，体重12kg，昨晚开始发烧，最高39.2℃，精神还可以。家里有布洛芬混悬液，"
            "该吃多少？报告单拍照发您邮箱了 zhang.wei1986@example.com 麻烦看一下。",
     "answer": "你好，2岁孩子退烧可以用布洛芬混悬液，按5～10mg/kg计算，12kg大约每次60～120mg，"
               "两次用药间隔6～8小时，24小时不超过4次。也可以用对乙酰氨基酚10～15mg/kg。"
               "如果持续高热超过3天、精神差或者出现抽搐，要及时到儿科就诊。"},
    {"department": "心血管科", "title": "胸口闷痛是不是冠心病？",
     "ask": "我爸62岁，最近爬楼梯就胸口闷痛，休息几分钟能缓解，他有高血压和2型糖尿病。"
            "我们在外地，能加您微信吗？我手机号是13987654321。",
     "answer": "你好，活动后胸闷胸痛、休息后缓解，加上高血压和糖尿病，要高度怀疑冠状动脉粥样硬化导致的心绞痛。"
               "建议尽快到心内科做心电图、冠状动脉CT血管成像，必要时冠状动脉造影。"
               "在确诊前可以先服用阿司匹林100mg每日1次，随身带硝酸甘油，胸痛超过15分钟不缓解立即拨打120。"},
    {"department": "妇产科", "title": "孕24周糖耐量怎么准备？",
     "ask": "我今年30岁，怀孕24周，下周要做口服葡萄糖耐量试验，需要空腹吗？前一天能吃晚饭吗？",
     "answer": "你好，做75g OGTT前3天正常饮食，检查前一晚10点后禁食，当天早上空腹抽血，\n"
               "然后5分钟内喝完糖水，分别在1小时和2小时抽血。\n"
               "空腹≥5.1、1小时≥10.0、2小时≥8.5mmol/L任何一项达到就诊断为妊娠期糖尿病。"},
    {"department": "皮肤科", "title": "湿疹用激素药膏安全吗？",
     "ask": "孩子4岁，手肘和膝盖后面反复湿疹，很痒，抓破了。医生开了地奈德乳膏，我担心激素有副作用，能用吗？",
     "answer": "你好，地奈德是弱效激素，适合儿童和面部使用。按医嘱薄涂每日2次，症状控制后逐渐减少次数，"
               "短期规范使用是安全的。更重要的是每天足量涂保湿霜，修复皮肤屏障，洗澡水温不要太高。"},
    {"department": "外科", "title": "腰椎间盘突出要不要做手术？",
     "ask": "我今年45岁，开出租车十几年，腰痛半年，最近左腿发麻，腰椎MRI提示L4/5椎间盘突出。需要手术吗？",
     "answer": "你好，大多数腰椎间盘突出症可以先保守治疗，包括卧床休息、塞来昔布200mg每日1次止痛、"
               "甲钴胺0.5mg每日3次营养神经和康复锻炼。如果保守治疗3个月无效，或出现大小便障碍、下肢无力加重，"
               "需要考虑手术。开车时腰部加个靠垫，每1小时下车活动一下。"},
]


def consult_blocks() -> list[str]:
    blocks = []
    hospitals = ["市第一人民医院", "县中医院", "社区卫生服务中心", "省人民医院", "区妇幼保健院"]
    for i, d in enumerate(D[:30], start=1):
        s = d["syms"]
        drug, dose = d["drugs"][0]
        w, age = who_for(d)
        turns = [
            ("医生", f"你好，{s[0]}持续多久了？有没有{s[-1]}？"),
            ("病人", f"{rng.choice(['大概两周', '一个多月', '三四天', '半年左右'])}了，{s[-1]}也有，晚上明显一些。"),
            ("医生", f"之前做过{d['checks'][0]}吗？结果怎么样？"),
            ("病人", f"在{rng.choice(hospitals)}查过，" + (f"{d['lab']}。" if d["lab"] else "医生说问题不大，让观察。")),
            ("医生", f"结合你的情况，考虑{d['name']}。可以先用{drug}，{dose}。{d['caution']}。"),
            ("病人", f"{drug}需要吃多久？有没有副作用？"),
            ("医生", f"一般先用一个疗程再复查{d['checks'][-1]}，少数人会有{rng.choice(SIDE_EFFECTS)}，"
                     f"不严重可以继续，明显不舒服就停药来{d['dept']}门诊。"),
        ]
        if i % 3 == 0:
            turns = turns[:5]
        lines = [
            f"id={i}",
            f"https://www.example-clinic.cn/consult/{100000 + i * 37}.htm",
            "",
            "Description",
            f"疾病： {d['name']}？",
            f"病情描述： {w}{age}，{rng.choice(DUR)}出现{'、'.join(s[:3])}，{rng.choice(EXTRA)}。",
            f"希望获得的帮助： 是不是{d['name']}？需要怎么治疗？",
            f"患病多久： {rng.choice(['一周内', '一个月内', '半年内', '一年以上'])}",
            "",
            "Dialogue",
        ]
        for who, text in turns:
            lines += [f"{who}：", text]
        blocks.append("\n".join(lines))
    return blocks


QA_TEMPLATES = [
    ("{n}的常见症状有哪些？", lambda d: f"{d['name']}常见的表现有{'、'.join(d['syms'])}。症状轻重因人而异，"
                                    f"有些人早期没有明显不适，需要通过{d['checks'][0]}等检查发现。"),
    ("{n}应该怎样治疗？", lambda d: "治疗包括生活方式调整和药物治疗。常用药物有" + "；".join(
        f"{a}，{b}" for a, b in d["drugs"]) + f"。具体方案请在{d['dept']}医生指导下制定。"),
    ("确诊{n}需要做哪些检查？", lambda d: f"常用检查有{'、'.join(d['checks'])}。医生会结合症状和检查结果综合判断，"
                                     f"必要时还需排除其他疾病。"),
    ("{n}可能引起哪些并发症？", lambda d: f"{d['name']}如果长期控制不佳，可能导致{'、'.join(d['comps'])}。"
                                     f"规范治疗、定期随访可以明显降低这些风险。"),
    ("请介绍{n}的病因。", lambda d: f"{d['name']}的发生与{d['cause']}有关。"),
    ("{n}患者日常生活中需要注意什么？", lambda d: f"{d['caution']}。另外要按时服药，定期到{d['dept']}复诊。"),
    ("请说明{drug}在{n}中的用法。", lambda d: f"{d['drugs'][0][0]}用于{d['name']}时，常用方法是{d['drugs'][0][1]}。"
                                       f"用药期间如出现{rng.choice(SIDE_EFFECTS)}等不适，应及时告诉医生。"),
]


def qa_records() -> list[dict]:
    recs = []
    for d in D:
        for q, a in QA_TEMPLATES:
            recs.append({"instruction": q.format(n=d["name"], drug=d["drugs"][0][0]), "input": "", "output": a(d)})
    rng.shuffle(recs)
    return recs[:145]


def sharegpt_records() -> list[dict]:
    out = []
    for d in rng.sample(D, 5):
        s = d["syms"]
        out.append({"conversations": [
            {"from": "human", "value": f"医生，我最近{s[0]}，还有点{s[1]}，会是{d['name']}吗？"},
            {"from": "gpt", "value": f"{s[0]}和{s[1]}可以见于{d['name']}，但也可能是其他原因。"
                                     f"建议先做{d['checks'][0]}，到{d['dept']}就诊明确诊断后再用药。"},
        ]})
    return out


def triples() -> list[dict]:
    out = []
    for d in D[:22]:
        spo = [[d["name"], "临床表现", s] for s in d["syms"][:3]]
        spo += [[d["name"], "药物治疗", a] for a, _ in d["drugs"][:2]]
        spo += [[d["name"], "检查", c] for c in d["checks"][:2]]
        spo += [[d["name"], "发病部位", d["body"]]]
        spo += [[d["name"], "并发症", c] for c in d["comps"][:2]]
        if d["name"] in MICROBES:
            spo.append([d["name"], "病因", MICROBES[d["name"]]])
        text = (f"{d['name']}的临床表现:{'，'.join(s for _, p, s in spo if p == '临床表现')}。"
                f"{d['name']}的药物治疗:{'，'.join(o for _, p, o in spo if p == '药物治疗')}。"
                f"{d['name']}的检查:{'，'.join(o for _, p, o in spo if p == '检查')}。"
                f"{d['name']}的发病部位:{d['body']}。"
                f"{d['name']}的并发症:{'，'.join(o for _, p, o in spo if p == '并发症')}。")
        if d["name"] in MICROBES:
            text += f"{d['name']}的病因:{MICROBES[d['name']]}。"
        out.append({"text": text, "spo_list": spo})
    # a few 相关疾病 records from the complications' side
    for comp, dis in [("糖尿病肾病", "2型糖尿病"), ("心绞痛", "冠状动脉粥样硬化"), ("脑梗死", "心房颤动")]:
        out.append({"text": f"{comp}的相关疾病:{dis}。", "spo_list": [[comp, "相关疾病", dis]]})
    return out


def term_lists() -> dict[str, list[str]]:
    def uniq(xs):
        seen, out = set(), []
        for x in xs:
            if x and x not in seen:
                seen.add(x)
                out.append(x)
        return out
    cap = 80  # the demo lists stay small: main terms first, then extras
    return {k: v[:cap] for k, v in {
        "disease": uniq([d["name"] for d in D] + EXTRA_DISEASES + [c for d in D for c in d["comps"]]),
        "symptom": uniq([s for d in D for s in d["syms"]] + EXTRA_SYMPTOMS + SIDE_EFFECTS),
        "drug": uniq([a for d in D for a, _ in d["drugs"]] + EXTRA_DRUGS),
        "check": uniq([c for d in D for c in d["checks"]] + EXTRA_CHECKS + LAB_ITEMS),
    }.items()}


# ---- general-domain prose --------------------------------------------------------------------
CITIES = ["北京", "上海", "杭州", "成都", "西安", "广州", "武汉", "南京", "青岛", "昆明", "厦门", "长沙"]
TEAMS = ["城市蓝队", "江南队", "高原雄鹰队", "滨海队", "北方之星队", "山城队"]
GEN = [
    "{c}今天白天晴转多云，最高气温{t}度，傍晚有短时阵雨，出门记得带伞。",
    "据气象台消息，受冷空气影响，{c}未来三天气温将下降{n}度左右，并伴有四到五级北风。",
    "{c}地铁{n}号线今天正式开通运营，全程设站{st}座，市民从城东到城西只需四十分钟。",
    "在昨晚进行的联赛中，{team}主场以{n}比{k}战胜对手，继续领跑积分榜。",
    "{team}的年轻前锋在下半场连进两球，赛后主教练表示球队的防守还需要加强。",
    "第{n}届马拉松比赛周日在{c}鸣枪开跑，约{n}万名跑者参加，冠军成绩是两小时十一分。",
    "一家科技公司发布了新款手机，搭载自研芯片，电池容量提升到{big}毫安时，售价{n}999元起。",
    "研究人员开发出一种新的储能材料，可以让电动汽车的续航里程提高约{n}成。",
    "{c}的一座老图书馆完成改造重新开放，新增了自习区和儿童阅读角，周末读者络绎不绝。",
    "秋天是去{c}旅游的好季节，街边的桂花开了，游客可以坐船游览古城的河道。",
    "今年国庆假期，{c}共接待游客{m}0多万人次，古镇和博物馆最受欢迎。",
    "{c}一家老字号面馆已经开了{dec}年，招牌牛肉面每天早上六点就开始排队。",
    "周末的农贸市场上，新上市的柑橘每斤{n}元，摊主说今年雨水充足，果子特别甜。",
    "学校组织学生到郊外开展研学活动，孩子们在老师带领下认识了{m}种植物。",
    "{c}今年新建了{n}座口袋公园，附近居民晚饭后有了散步和跳舞的地方。",
    "高铁{c}站今天开始试运行新的刷脸进站系统，旅客通过闸机的时间缩短了一半。",
    "一位来自{c}的摄影师花了{n}年时间拍摄城市的清晨，作品在美术馆展出。",
    "新学期开始，{c}多所中学开设了编程和机器人课程，学生可以自由选修。",
    "今年的稻谷收成不错，{c}郊区的农民用收割机抢收，每亩产量比去年增加了{n}0斤。",
    "在全国青少年围棋比赛中，一名{n}岁的选手连胜七局，获得少年组冠军。",
    "随着网购越来越普及，{c}的快递量在双十一期间达到平时的{n}倍。",
    "音乐节将于下月在{c}举行，{m}支乐队参加演出，门票已经在网上开售。",
    "{c}发布消息，老旧小区加装电梯工作进展顺利，今年已完成{m}00多部。",
    "一款国产大型客机完成了在{c}的高温试飞，各项数据符合设计要求。",
    "{c}的夜市重新开张，烤串、凉粉和手工冰粉吸引了不少年轻人前来打卡。",
    "山区小学的孩子们收到了一批新书和{n}0台电脑，校长说这下上课方便多了。",
    "今年{c}的房屋租金小幅上涨，刚毕业的年轻人更愿意选择合租。",
    "工程师介绍，这座跨江大桥全长{big}多米，采用双塔斜拉结构，预计明年通车。",
    "乒乓球公开赛女子单打决赛中，{team}的选手以四比{kz}夺冠。",
    "天文爱好者在{c}郊外观测到了流星雨，每小时最多可以看到{n}0颗流星。",
    "{c}推出了共享单车新规，停车必须放在指定区域，否则会被扣信用分。",
    "这部电视剧讲述了三代人在{c}奋斗的故事，播出后收视率一直排在前列。",
    "新开的咖啡店把旧仓库改成了阅读空间，老板说希望大家来这里安静地坐一下午。",
    "家长们越来越重视孩子的阅读习惯，不少家庭每周都会一起去{c}图书馆借书。",
    "一场大雪过后，{c}的滑雪场迎来了开板日，教练说今年的雪质特别好。",
    "港口的集装箱吞吐量今年前十个月同比增长{n}个百分点，外贸订单明显回暖。",
    "羽毛球混双比赛中，{team}的组合发挥稳定，直落两局晋级四强。",
    "{c}的老街上有一家修钟表的小店，师傅已经在这里干了{dec}多年。",
    "人工智能翻译软件更新后支持{n}0多种语言，出国旅行问路点餐更加方便。",
    "{c}博物馆推出夜场开放，观众可以在灯光下欣赏青铜器和古代书画。",
]


def general_lines(n: int) -> list[str]:
    out, seen = [], set()
    while len(out) < n:
        parts = rng.sample(GEN, rng.choice([1, 2, 2, 3]))
        line = "".join(p.format(c=rng.choice(CITIES), team=rng.choice(TEAMS), t=rng.randint(12, 35),
                                n=rng.randint(2, 9), k=rng.randint(0, 2), m=rng.randint(2, 30),
                                big=rng.randint(40, 60) * 100, st=rng.randint(18, 32), dec=rng.choice([20, 30, 40]),
                                kz=rng.choice(["零", "一", "二"])) for p in parts)
        if line not in seen:
            seen.add(line)
            out.append(line)
    # a couple of lines that touch on health, as real news does: "few medical terms"
    out[17] = "社区医院开展义诊活动，志愿者为老人测量血压，并讲解冬季注意保暖的常识。"
    out[211] = "新的体育公园设有健身步道，医生建议市民每周坚持运动三次以上。"
    return out


# ---- CBLUE: KUAKE-QIC ------------------------------------------------------------------------
QIC = {
    "治疗方案": ["{d}怎么治疗效果好", "{d}吃什么药能好", "得了{d}该怎么治", "{s}吃什么药可以缓解",
               "{d}能不能根治，用什么方法", "{s}严重了怎么办才好", "{d}有什么好的治疗办法"],
    "病情诊断": ["{s}{s2}是什么病", "老是{s}是不是得了{d}", "{s}伴有{s2}会是{d}吗", "{k}{s}{s2}是什么病啊",
               "经常{s}是什么病的信号"],
    "病因分析": ["为什么会得{d}", "{d}是由什么引起的", "{s}的原因有哪些", "{k}为什么会{s}",
               "什么原因导致{s}"],
    "指标解读": ["{c}偏高说明什么", "{c}结果怎么看", "{c}正常范围是多少", "{c}偏低是什么意思",
               "{c}报告上的箭头代表什么"],
    "就医建议": ["{d}挂什么科", "{s}应该去医院哪个科看", "{d}去哪家医院看比较好", "{k}{s}要挂急诊吗",
               "{d}需要住院吗还是门诊就行"],
    "注意事项": ["{d}饮食上要注意什么", "{d}不能吃哪些东西", "吃{m}期间有什么禁忌"],
    "功效作用": ["{m}的作用是什么", "{m}有什么功效", "{m}是治什么的"],
    "医疗费用": ["做{c}大概多少钱", "{d}治疗一次要花多少钱", "{c}费用贵不贵"],
    "疾病表述": ["{d}有什么症状", "{d}早期有哪些表现", "{d}会传染吗"],
    "后果表述": ["{d}不治疗会怎么样", "{d}拖久了有什么后果", "{d}会不会遗传给孩子"],
    "其他": ["医生还在吗", "好的，明白了，谢谢大夫", "那我明天再来问", "刚才说的没看懂能再说一遍吗",
           "这个网站的医生靠谱吗", "我先去问问家里人", "可以视频问诊吗", "昨天问的问题还没回复",
           "请问周末有人值班吗", "图片发不上来怎么办", "你是真人医生吗", "收到，我先试试看"],
}
WEIGHTS = {"治疗方案": 14, "病情诊断": 14, "病因分析": 12, "指标解读": 12, "就医建议": 12,
           "注意事项": 6, "功效作用": 6, "医疗费用": 5, "疾病表述": 5, "后果表述": 5, "其他": 9}
KIDWORD = ["孩子", "宝宝", "老人", "孕妇", "女生", "男人"]


def qic_candidates(terms: dict[str, list[str]]) -> list[tuple[str, str]]:
    checks = terms["check"]
    drugs = terms["drug"]
    out, seen = [], set()
    labels = [lab for lab, w in WEIGHTS.items() for _ in range(w)]
    tries = 0
    while len(out) < 420 and tries < 50000:
        tries += 1
        lab = rng.choice(labels)
        d = rng.choice(D)
        s, s2 = rng.sample(d["syms"], 2)
        tpl = rng.choice(QIC[lab])
        q = tpl.format(d=d["name"], s=s, s2=s2, c=rng.choice(checks), m=rng.choice(drugs), k=rng.choice(KIDWORD))
        q += rng.choice(["", "", "？", "?", "呢", "啊"]) if lab != "其他" else ""
        if q in seen:
            continue
        seen.add(q)
        out.append((q, lab))
    return out


# ---- CBLUE: CMeEE ---------------------------------------------------------------------------
def E(t, v):
    return (t, v)


PRO_MARKS = ("镜", "造影", "彩超", "B超", "CT", "MRI", "心电图", "X线", "活检", "脑电图", "监测", "肺功能",
             "舒张试验", "骨密度", "量表", "超声", "耐量试验", "呼气试验")
DEPT_NER = {"心血管科": "心内科", "消化科": "消化内科", "呼吸科": "呼吸内科", "神经科": "神经内科",
            "内科": "内科", "外科": "普外科"}
THERAPY = [("腹腔镜阑尾切除术", "转移性右下腹痛"), ("腹腔镜胆囊切除术", "右上腹痛"), ("经皮冠状动脉介入治疗", "胸痛"),
           ("雾化吸入", "喘息"), ("体外冲击波碎石", "腰痛"), ("四联疗法", "腹胀"), ("胰岛素治疗", "多饮"),
           ("静脉溶栓", "肢体无力"), ("血液透析", "下肢水肿")]
EQUIP_SENTENCES = [
    ["使用", E("equ", "血糖仪"), "自测", E("ite", "空腹血糖"), "，有助于及时调整", E("dru", "甘精胰岛素"), "的剂量。"],
    ["佩戴", E("equ", "胰岛素泵"), "的", E("dis", "2型糖尿病"), "患者仍需每天监测", E("ite", "餐后2小时血糖"), "。"],
    [E("dis", "心房颤动"), "患者可佩戴", E("equ", "动态心电图记录仪"), "评估心室率，再调整", E("dru", "美托洛尔"), "的剂量。"],
    [E("dis", "慢性阻塞性肺疾病"), "合并", E("dis", "呼吸衰竭"), "时可使用", E("equ", "无创呼吸机"), "辅助通气。"],
    ["儿童使用", E("dru", "沙丁胺醇气雾剂"), "时建议配合", E("equ", "储雾罐"), "，以减少药物沉积在", E("bod", "口腔黏膜"), "。"],
    ["家庭使用", E("equ", "雾化器"), "进行", E("pro", "雾化吸入"), "后，应清洁", E("bod", "面部"), "并漱口。"],
    [E("dis", "高血压"), "患者每天早晚用", E("equ", "电子血压计"), "测量血压，可以减少", E("sym", "头晕"), "的发生。"],
    ["植入", E("equ", "心脏起搏器"), "的", E("dis", "心力衰竭"), "患者应避免靠近强磁场。"],
]


def ite_pro(d: dict) -> tuple[list[str], list[str]]:
    pro = [c for c in d["checks"] if any(m in c for m in PRO_MARKS)]
    return [c for c in d["checks"] if c not in pro], pro


def cmee_sentence() -> list:
    d = rng.choice(D)
    sy = d["syms"]
    ite, pro = ite_pro(d)
    k = rng.randrange(13)
    if k == 1 and ite and pro:
        return [E("dis", d["name"]), "的诊断主要依靠", E("ite", rng.choice(ite)), "和", E("pro", rng.choice(pro)), "。"]
    if k == 2:
        a, b = rng.sample(SIDE_EFFECTS, 2)
        return ["对于", E("dis", d["name"]), "，可选用", E("dru", d["drugs"][0][0]), "治疗，常见不良反应包括", E("sym", a), "和", E("sym", b), "。"]
    if k == 3:
        dd = rng.choice([x for x in D if x["name"] in MICROBES])
        return [E("mic", MICROBES[dd["name"]]), "感染是", E("dis", dd["name"]), "的重要病因。"]
    if k == 4:
        return ["患儿因", E("sym", rng.choice(["发热", "咳嗽", "腹泻", "呕吐", "皮疹", "喘息"])), rng.choice(["3天", "2天", "1周", "5天"]),
                "入住", E("dep", rng.choice(["儿科", "儿科", "急诊科"])), "，查", E("ite", rng.choice(["血常规", "C反应蛋白", "降钙素原", "尿常规"])), "提示异常。"]
    if k == 5:
        return [E("dis", d["name"]), "可累及", E("bod", d["body"]), "，严重者可并发", E("dis", rng.choice(d["comps"])), "。"]
    if k == 6:
        return list(rng.choice(EQUIP_SENTENCES))
    if k == 7 and len(sy) >= 2:
        a, b = rng.sample(sy, 2)
        return [E("bod", d["body"]), "受累时，", E("dis", d["name"]), "患者常诉", E("sym", a), "，部分伴有", E("sym", b), "。"]
    if k == 8 and ite and d["name"] not in ACUTE:
        return ["长期", E("dis", d["name"]), "患者应定期到", E("dep", DEPT_NER.get(d["dept"], d["dept"])), "复查", E("ite", rng.choice(ite)), "。"]
    if k == 9:
        p, s = rng.choice(THERAPY)
        return ["行", E("pro", p), "后，患者", E("sym", s), "明显缓解，", rng.choice(["予以出院", "继续随访", "门诊复诊"]), "。"]
    if k == 10:
        return [rng.choice(["女", "男"]), "，", str(rng.randint(20, 85)), "岁，", rng.choice(["反复", "间断", "突发"]), E("sym", rng.choice(sy)),
                rng.choice(["2年", "3个月", "10天", "半年"]), "，既往有", E("dis", rng.choice([x["name"] for x in D])), "病史。"]
    if k == 11 and len(d["drugs"]) >= 2 and ite:
        a, b = rng.sample([x for x, _ in d["drugs"]], 2)
        return ["治疗", E("dis", d["name"]), "时，", E("dru", a), "与", E("dru", b), "合用需注意监测", E("ite", rng.choice(ite)), "。"]
    if k == 12:
        return [E("dis", d["name"]), "常见于", rng.choice(["中老年人", "青壮年", "女性", "儿童"]), "，典型症状为", E("sym", sy[0]), "，可通过",
                E(("pro" if pro else "ite"), rng.choice(pro or ite)), "协助诊断。"]
    a, b = rng.sample(sy, 2)
    return [E("dis", d["name"]), "患者可出现", E("sym", a), "、", E("sym", b), "等表现。"]


def render(pieces: list) -> dict:
    text, ents = "", []
    for p in pieces:
        if isinstance(p, tuple):
            t, v = p
            ents.append({"start_idx": len(text), "end_idx": len(text) + len(v) - 1, "type": t, "entity": v})
            text += v
        else:
            text += p
    # nested body parts inside disease names, as CMeEE annotates them (冠状动脉 in 冠状动脉粥样硬化)
    for e in list(ents):
        if e["type"] == "dis":
            for b in BODY_PARTS:
                i = e["entity"].find(b)
                if i >= 0 and len(b) < len(e["entity"]):
                    s = e["start_idx"] + i
                    ents.append({"start_idx": s, "end_idx": s + len(b) - 1, "type": "bod", "entity": b})
                    break
    ents.sort(key=lambda e: (e["start_idx"], -e["end_idx"]))
    for e in ents:
        assert text[e["start_idx"]:e["end_idx"] + 1] == e["entity"], (text, e)
    return {"text": text, "entities": ents}


# ---- writing ---------------------------------------------------------------------------------
def write_text(rel: str, text: str) -> None:
    p = ROOT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8", newline="\n")


def write_json_array(rel: str, recs: list) -> None:
    # the official CBLUE files are pretty-printed with 2 spaces and no final newline
    write_text(rel, json.dumps(recs, ensure_ascii=False, indent=2))


def main() -> None:
    terms = term_lists()
    rows = dialogue_rows() + HAND_ROWS
    rng.shuffle(rows)
    # exact duplicates and near-duplicates (a few characters edited), for dedup
    for i in (3, 20, 41, 77):
        rows.append(dict(rows[i]))
    for i in (5, 33, 60, 90, 101):
        r = dict(rows[i])
        r["answer"] = r["answer"].replace("，", "。", 1).replace("建议", "最好", 1).replace("你好", "您好", 1)
        r["ask"] = r["ask"].rstrip("。！？") + "，麻烦了。"
        rows.append(r)
    blocks = consult_blocks()
    qa = qa_records()
    sg = sharegpt_records()

    corpus_text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n".join(blocks) + \
        "\n".join(json.dumps(r, ensure_ascii=False) for r in qa + sg)

    # CBLUE texts that do not occur in the corpus (decontamination plants come after)
    qic = [(q, l) for q, l in qic_candidates(terms) if q not in corpus_text and q.rstrip("?？呢啊") not in corpus_text]
    assert len(qic) >= 340, len(qic)
    qic_train, qic_dev, qic_test = qic[:240], qic[240:300], qic[300:340]
    seen, ner = set(), []
    while len(ner) < 220:
        r = render(cmee_sentence())
        if r["text"] not in seen and r["text"] not in corpus_text:
            seen.add(r["text"])
            ner.append(r)
    ner_train, ner_dev, ner_test = ner[:150], ner[150:190], ner[190:220]

    # planted contamination: 3 corpus records quote dev items verbatim
    planted = [qic_dev[0][0], ner_dev[0]["text"], ner_dev[1]["text"]]
    rows.append({"department": "内科", "title": planted[0],
                 "ask": f"{planted[0]}？网上说法很多，想听听专业医生的意见。",
                 "answer": "你好，这个问题需要结合具体检查结果来判断，建议带上化验单到门诊面诊。"})
    qa.append({"instruction": "请解释下面这句医学描述的含义。", "input": "",
               "output": f"原句：“{planted[1]}”这句话说明了疾病、症状和检查之间的关系。"})
    blocks[4] = blocks[4].replace("希望获得的帮助：", f"补充： 看到资料里写“{planted[2]}”，想确认一下。\n希望获得的帮助：")

    # files
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["department", "title", "ask", "answer"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text("medical/dialogue.csv", buf.getvalue())
    write_text("medical/consult.txt", "\n\n".join(blocks) + "\n")
    qa_lines = [json.dumps(r, ensure_ascii=False) for r in qa]
    for i, r in enumerate(sg):  # ShareGPT lines mixed in
        qa_lines.insert(20 + 30 * i, json.dumps(r, ensure_ascii=False))
    write_text("medical/qa.jsonl", "\n".join(qa_lines) + "\n")
    write_text("kg/triples.json", json.dumps(triples(), ensure_ascii=False, indent=1))
    for name, lst in terms.items():
        write_text(f"kg/{name}.txt", "\n".join(lst) + "\n")
    write_text("general/news.txt", "\n".join(general_lines(300)) + "\n")
    base = "cblue/KUAKE-QIC/KUAKE-QIC_"
    write_json_array(base + "train.json", [{"id": f"s{i}", "query": q, "label": l} for i, (q, l) in enumerate(qic_train, 1)])
    write_json_array(base + "dev.json", [{"id": f"s{i}", "query": q, "label": l} for i, (q, l) in enumerate(qic_dev, 1)])
    write_json_array(base + "test.json", [{"id": f"s{i}", "query": q} for i, (q, _) in enumerate(qic_test, 1)])
    base = "cblue/CMeEE/CMeEE_"
    write_json_array(base + "train.json", ner_train)
    write_json_array(base + "dev.json", ner_dev)
    write_json_array(base + "test.json", [{"text": r["text"]} for r in ner_test])
    trip = triples()
    med = "".join(read_all for read_all in [(ROOT / f).read_text(encoding="utf-8") for f in
                                            ("medical/dialogue.csv", "medical/consult.txt", "medical/qa.jsonl")])
    gen = set((ROOT / "general/news.txt").read_text(encoding="utf-8"))
    cjk = {ch for ch in med if "\u4e00" <= ch <= "\u9fff"}
    write_readme({
        "dialogue": len(rows), "consult": len(blocks), "inst": len(qa), "share": len(sg), "qa": len(qa_lines),
        "exact": 4, "near": 5, "planted": "\n".join(f"  - `{t}`" for t in planted),
        "kg_recs": len(trip), "kg_triples": sum(len(r["spo_list"]) for r in trip),
        "terms": " / ".join(str(len(v)) for v in terms.values()) + " terms",
        "news": 300, "missing": len(cjk - gen), "medchars": len(cjk),
        "qic": f"{len(qic_train)} / {len(qic_dev)} / {len(qic_test)}",
        "ner": f"{len(ner_train)} / {len(ner_dev)} / {len(ner_test)}",
    })
    print(json.dumps({"dialogue_rows": len(rows), "consult_blocks": len(blocks), "qa": len(qa_lines),
                      "triples_records": len(triples()), "terms": {k: len(v) for k, v in terms.items()},
                      "qic": [len(qic_train), len(qic_dev), len(qic_test)],
                      "cmeee": [len(ner_train), len(ner_dev), len(ner_test)], "planted": planted},
                     ensure_ascii=False, indent=1))


README = """# cmedbert demo data

Small data sets that `cmedbert demo` runs every stage on (CPU, minutes). **Everything here was
written for this project** (generated by `tools/make_demo_data.py` from the hand-written knowledge
base in `tools/kb.py`); nothing is copied from a public data set. License: the same as the project
(Apache-2.0). The medical statements are simplified textbook-level examples written to exercise a
pipeline: **not medical advice and not for clinical decisions** (不能用于临床决策).

All files are UTF-8 without BOM, LF line endings. Regenerate with
`python cmedbert/demo_data/tools/make_demo_data.py` (deterministic).

## medical/ (pretraining corpus input)
| file | format | count |
|---|---|---|
| `dialogue.csv` | Toyhom-style CSV, header `department,title,ask,answer`; one answer holds line breaks inside a quoted field | {dialogue} rows |
| `consult.txt` | MedDialog/COVID-Dialogue block format: `id=N`, URL, `Description` (疾病：/病情描述：/希望获得的帮助：/患病多久：), `Dialogue` with `病人：`/`医生：` on their own line followed by the turn text; blank line between blocks | {consult} consultations |
| `qa.jsonl` | one JSON object per line: instruction style `{{"instruction", "input": "", "output"}}` ({inst} lines) mixed with ShareGPT style `{{"conversations": [{{"from": "human"}}, {{"from": "gpt"}}]}}` ({share} lines) | {qa} lines |

Planted on purpose, so the corpus stage visibly does something:
* personal identifiers to scrub: phone numbers `13812345678`, `13987654321`, email `zhang.wei1986@example.com` (dialogue.csv);
* {exact} exact duplicate rows and {near} near-duplicates (a few characters edited) at the end of dialogue.csv;
* 3 CBLUE dev texts quoted verbatim in the corpus (decontamination must drop these records):
{planted}
  No other CBLUE dev or test text occurs in the medical files (checked by `tests/test_demo_data.py`).

## kg/
| file | format | count |
|---|---|---|
| `triples.json` | CMeKG-style JSON array `{{"text", "spo_list": [[s, p, o], ...]}}`; predicates 临床表现 药物治疗 检查 发病部位 并发症 病因 相关疾病 | {kg_recs} records, {kg_triples} triples |
| `disease.txt` / `symptom.txt` / `drug.txt` / `check.txt` | one term per line (for a jieba user dictionary / vocab extension) | {terms} |

## general/
`news.txt`: {news} lines of general-domain (non-medical) Chinese prose, one short document per line
(weather, transport, sports, technology, travel, daily life). It has almost no medical terms, so a
vocabulary trained on it misses most medical characters: {missing} of the {medchars} CJK characters used in
`medical/` never occur in it. That is what vocabulary extension then adds.

## cblue/ (official CBLUE file names and formats)
| task | train / dev / test | notes |
|---|---|---|
| `KUAKE-QIC/KUAKE-QIC_{{train,dev,test}}.json` | {qic} | JSON array of `{{"id": "s1", "query", "label"}}`, pretty-printed; test records have only `id` and `query` (as the official test file). Official 11 labels, weighted toward 治疗方案/病情诊断/病因分析/指标解读/就医建议; the label is learnable from the wording. |
| `CMeEE/CMeEE_{{train,dev,test}}.json` | {ner} | JSON array of `{{"text", "entities": [{{"start_idx", "end_idx", "type", "entity"}}]}}`, **end_idx inclusive**, 9 types dis sym pro equ dru ite bod dep mic, some nested (a body part inside a disease name); test records have only `text`. Offsets are computed by the generator and verified. |
"""


def write_readme(c: dict) -> None:
    write_text("README.md", README.format(**c))


if __name__ == "__main__":
    main()
