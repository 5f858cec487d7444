//! The kiosk's words in each language it speaks: Chinese by default, English on request.

use selfvend_host::money::Fen;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    pub fn words(self) -> &'static Words {
        match self {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }

    /// A short name for files and logs.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }
}

/// Every fixed text a customer screen shows.
pub struct Words {
    /// The button that switches to the other language, in that language.
    pub switch: &'static str,
    pub title: &'static str,
    pub insert_card: &'static str,
    pub insert_card_hint: &'static str,
    pub reading_card: &'static str,
    pub keep_card_in: &'static str,
    pub customer_name: &'static str,
    pub customer_number: &'static str,
    pub meter_number: &'static str,
    pub address: &'static str,
    pub last_purchase: &'static str,
    pub arrears: &'static str,
    pub price: &'static str,
    pub choose_amount: &'static str,
    pub other_amount: &'static str,
    pub clear: &'static str,
    pub confirm: &'static str,
    pub cancel: &'static str,
    pub pay_cash: &'static str,
    pub pay_card: &'static str,
    pub insert_banknotes: &'static str,
    pub accepted_notes: &'static str,
    pub due: &'static str,
    pub paid: &'static str,
    pub no_change: &'static str,
    pub processing: &'static str,
    pub step_sell: &'static str,
    pub step_write: &'static str,
    pub step_print: &'static str,
    pub credited: &'static str,
    pub energy: &'static str,
    pub take_card_and_receipt: &'static str,
    pub pending: &'static str,
    pub pending_detail: &'static str,
    pub refused: &'static str,
    pub yuan: &'static str,
    /// Between a name and its value.
    pub sep: &'static str,
}

const ZH: Words = Words {
    switch: "English",
    title: "自助售电",
    insert_card: "请插入电卡",
    insert_card_hint: "芯片朝上，插入右侧读卡口",
    reading_card: "正在读卡",
    keep_card_in: "请勿拔卡",
    customer_name: "户名",
    customer_number: "户号",
    meter_number: "表号",
    address: "地址",
    last_purchase: "上次购电",
    arrears: "欠费",
    price: "电价",
    choose_amount: "请选择购电金额",
    other_amount: "其他金额",
    clear: "清除",
    confirm: "确认",
    cancel: "取消",
    pay_cash: "现金支付",
    pay_card: "银行卡支付",
    insert_banknotes: "请投入纸币",
    accepted_notes: "可收：10、20、50、100 元",
    due: "应付",
    paid: "已投",
    no_change: "本机不找零",
    processing: "正在处理，请稍候",
    step_sell: "售电",
    step_write: "写卡",
    step_print: "打印",
    credited: "购电成功",
    energy: "电量",
    take_card_and_receipt: "请取回电卡和凭条",
    pending: "交易待处理",
    pending_detail: "您的款项已记录，结果确认后自动补售电，请保留凭条",
    refused: "无法售电",
    yuan: "元",
    sep: "：",
};

const EN: Words = Words {
    switch: "中文",
    title: "Electricity self-service",
    insert_card: "Please insert your meter card",
    insert_card_hint: "Chip up, into the reader on the right",
    reading_card: "Reading your card",
    keep_card_in: "Please leave the card in",
    customer_name: "Name",
    customer_number: "Account",
    meter_number: "Meter",
    address: "Address",
    last_purchase: "Last purchase",
    arrears: "Arrears",
    price: "Price",
    choose_amount: "Choose an amount",
    other_amount: "Other amount",
    clear: "Clear",
    confirm: "Confirm",
    cancel: "Cancel",
    pay_cash: "Pay in cash",
    pay_card: "Pay by bank card",
    insert_banknotes: "Please insert banknotes",
    accepted_notes: "Accepted: 10, 20, 50, 100 yuan",
    due: "Due",
    paid: "Paid",
    no_change: "This kiosk gives no change",
    processing: "Processing, please wait",
    step_sell: "Sell",
    step_write: "Write card",
    step_print: "Print",
    credited: "Purchase complete",
    energy: "Energy",
    take_card_and_receipt: "Please take your card and receipt",
    pending: "Purchase pending",
    pending_detail: "Your payment is recorded; the purchase completes once confirmed. Keep the receipt.",
    refused: "Cannot sell",
    yuan: "yuan",
    sep: ": ",
};

impl Words {
    /// An amount as the screen shows it: `50.00 元` / `50.00 yuan`.
    pub fn money(&self, fen: Fen) -> String {
        format!("{fen} {}", self.yuan)
    }
}
